// Types are generated from the Rust source (doc comments included) by `napi build`.
export * from './native'
