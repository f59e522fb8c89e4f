//! The mini-program simulator over real HTTP: tokens, subscribe messages and cards, each with the
//! refusals WeChat gives.

mod cards;
mod subscribe;
mod support;
mod tokens;
