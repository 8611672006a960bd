"""CuPy fused kernels (one torch reference each in kernels/reference.py) and CUDA-graph replay."""
