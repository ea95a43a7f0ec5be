//! Raw FFI to the kernel library (filled as the port grows).
