// ESM entry: the very same objects as the CommonJS entry.
import { createRequire } from 'node:module'
const require = createRequire(import.meta.url)
const m = require('./index.js')
export default m
export const {
  Client, Session, EtcdCluster, version,
  Lock, LockGuard, Election, Leadership, LeaderObserver,
  LeaderLoop, LeaderLatch, LeaderEvents,
  Registration, ServiceView, InstanceSets, InstanceEvents,
  ConfigView, ConfigChanges,
  metricsSnapshot, metricsText,
} = m
