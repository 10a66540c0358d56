//! Members several classes share. napi takes a class's methods only from `#[napi] impl`
//! blocks of that class, so [`held_members!`] writes them once for all. Each member is given
//! its doc as string literals, one a line (`native.d.ts` shows them): napi misreads doc
//! comments that went through `macro_rules!`.

/// `#[napi] impl Class` over the core handle in `self.core`, with, in this order:
/// - `fenced { put: ..; delete: ..; txn: ..; }` (optional): writes guarded by
///   `self.core.fence()`, rejected with code `FENCED` once the lock or leadership is not ours;
/// - `loss { lost: ..; on_lost: ..; }` (optional): the end of `self.core` as a Promise (the
///   reason of a loss, `null` at a normal end), and a callback called on a loss;
/// - `end { release: ..; async_dispose: ..; }` (optional): the method that ends the hold
///   (`release`, `resign`, `close`), then `[Symbol.asyncDispose]`, which calls it.
macro_rules! held_members {
    (impl $class:ident {
        $(fenced {
            put: $($put:literal)+;
            delete: $($delete:literal)+;
            txn: $($txn:literal)+;
        })?
        $(loss {
            lost: $($lost:literal)+;
            on_lost: $($on_lost:literal)+;
        })?
        $(end {
            $end:ident: $($end_doc:literal)+;
            async_dispose: $($dispose:literal)+;
        })?
    }) => {
        #[napi_derive::napi]
        impl $class {
            $(
                $(#[doc = $put])+
                #[napi(ts_return_type = "Promise<number>")]
                pub fn put<'env>(&self, env: &'env napi::Env, key: String, value: napi::bindgen_prelude::Either<String, napi::bindgen_prelude::Uint8Array>) -> napi::Result<napi::bindgen_prelude::PromiseRaw<'env, i64>> {
                    let (fence, value) = (self.core.fence().clone(), $crate::errors::bytes(value));
                    $crate::errors::promise(env, async move { fence.put(&key, value).await })
                }
                $(#[doc = $delete])+
                #[napi(ts_return_type = "Promise<number>")]
                pub fn delete<'env>(&self, env: &'env napi::Env, key: String) -> napi::Result<napi::bindgen_prelude::PromiseRaw<'env, i64>> {
                    let fence = self.core.fence().clone();
                    $crate::errors::promise(env, async move { fence.delete(&key).await })
                }
                $(#[doc = $txn])+
                #[napi(ts_return_type = "Promise<number>")]
                pub fn txn<'env>(&self, env: &'env napi::Env, ops: Vec<$crate::fenced::TxnOp>) -> napi::Result<napi::bindgen_prelude::PromiseRaw<'env, i64>> {
                    let (fence, ops) = (self.core.fence().clone(), $crate::fenced::ops(env, ops)?);
                    $crate::errors::promise(env, async move { fence.txn(ops).await })
                }
            )?
            $(
                $(#[doc = $lost])+
                #[napi(ts_return_type = "Promise<string | null>")]
                pub fn lost<'env>(&self, env: &'env napi::Env) -> napi::Result<napi::bindgen_prelude::PromiseRaw<'env, Option<String>>> {
                    let held = (*self.core).clone();
                    $crate::errors::promise(env, async move { Ok(held.lost().await) })
                }
                $(#[doc = $on_lost])+
                #[napi(ts_args_type = "callback: (reason: string) => void")]
                pub fn on_lost(&self, callback: $crate::Callback<String>) {
                    let held = (*self.core).clone();
                    $crate::notify(callback, async move { held.lost().await })
                }
            )?
            $(
                $(#[doc = $end_doc])+
                #[napi(ts_return_type = "Promise<void>")]
                pub fn $end<'env>(&self, env: &'env napi::Env) -> napi::Result<napi::bindgen_prelude::PromiseRaw<'env, ()>> {
                    let held = (*self.core).clone();
                    $crate::errors::promise(env, async move { held.$end().await })
                }
                $(#[doc = $dispose])+
                #[napi(well_known_symbol = "asyncDispose", ts_return_type = "Promise<void>")]
                pub fn async_dispose<'env>(&self, env: &'env napi::Env) -> napi::Result<napi::bindgen_prelude::PromiseRaw<'env, ()>> {
                    self.$end(env)
                }
            )?
        }
    };
}
pub(crate) use held_members;
