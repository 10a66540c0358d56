import { createRequire } from 'node:module'
const require = createRequire(import.meta.url)
const m = require('./testing.js')
export default m
export const { EtcdCluster } = m
