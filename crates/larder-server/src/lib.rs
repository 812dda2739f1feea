//! The Larder HTTP server (native API over any [`larder::Store`]).
