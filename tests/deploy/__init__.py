"""A package (not a bare folder) so that its package-scoped `ray start` cluster stops when its
tests end: pytest keeps a bare folder's package-scoped fixtures until the session ends, and the
cluster would hold the machine's CPUs through every later test."""
