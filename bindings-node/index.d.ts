// Types are generated from the Rust source (doc comments included) by `napi build` into
// native.d.ts. index.js makes the native stream classes async iterators; their iterator
// members are declared here.
import type { ConfigChange, Instance, InstanceEvent, LeaderEvent, LeaderInfo } from './native'

export * from './native'

declare module './native' {
  /** `for await (const leader of observer)`; `break` (or `return()`) stops the watch. */
  interface LeaderObserver extends AsyncIterableIterator<LeaderInfo | null, undefined> {
    [Symbol.asyncIterator](): LeaderObserver
  }
  /** `for await (const event of lp.events())`; `break` (or `return()`) unsubscribes. */
  interface LeaderEvents extends AsyncIterableIterator<LeaderEvent, undefined> {
    [Symbol.asyncIterator](): LeaderEvents
  }
  /** `for await (const event of events)`; `break` (or `return()`) unsubscribes. */
  interface InstanceEvents extends AsyncIterableIterator<InstanceEvent, undefined> {
    [Symbol.asyncIterator](): InstanceEvents
  }
  /** `for await (const instances of sets)`; `break` (or `return()`) unsubscribes. */
  interface InstanceSets extends AsyncIterableIterator<Instance[], undefined> {
    [Symbol.asyncIterator](): InstanceSets
  }
  /** `for await (const change of changes)`; `break` (or `return()`) unsubscribes. */
  interface ConfigChanges extends AsyncIterableIterator<ConfigChange, undefined> {
    [Symbol.asyncIterator](): ConfigChanges
  }
}
