"""SQL, one module per table group. Functions take the connection first."""
