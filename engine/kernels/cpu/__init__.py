"""Our C matrix kernel for x86 CPUs and its Python glue."""
