//! Safe API over the in-process Linux stack (filled as the port grows).
