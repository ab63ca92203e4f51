"""A package (not a bare folder) so that its package-scoped app and Ray cluster stop when its
tests end: pytest keeps a bare folder's package-scoped fixtures until the session ends, and a
later module's ray.init then finds Ray already initialised."""
