//! The JSON bodies of the native API (docs/http-api.md): defined once, in [`larder::wire`],
//! for the server and the http driver alike.

pub use larder::wire::{
    CapabilitiesJson, ConditionsJson, ErrorDetail, ErrorJson, ListJson, MetaJson,
};
