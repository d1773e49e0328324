//! phi3-model
