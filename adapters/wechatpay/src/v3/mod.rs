//! APIv3: JSON bodies, SHA256withRSA signatures, AEAD_AES_256_GCM resources.

pub mod aead;
pub mod keys;
pub mod sign;
