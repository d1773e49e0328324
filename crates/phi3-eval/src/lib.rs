//! phi3-eval
