"""A package (not a bare folder) so that its package-scoped app stops when its tests end: pytest
keeps a bare folder's package-scoped fixtures until the session ends."""
