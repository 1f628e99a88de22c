//! Placeholder, replaced by the paper-rule tests.
