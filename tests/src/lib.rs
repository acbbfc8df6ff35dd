//! End-to-end tests of replog on real processes live in `tests/tests/`.
