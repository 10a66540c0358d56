'use strict'
// A throwaway real etcd for your own tests:
//   const { EtcdCluster } = require('etcd-recipes/testing')
//   const etcd = await EtcdCluster.start({ members: 1 })
// Members still running at process exit are killed.
const { EtcdCluster } = require('./index.js')
module.exports = { EtcdCluster }
