"""Python-backend models that Triton runs. They import `triton_python_backend_utils`, which exists only inside
Triton's Python backend stub; the generated `model.py` shims import these classes."""
