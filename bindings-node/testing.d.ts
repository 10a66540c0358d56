export { EtcdCluster, EtcdClusterOptions } from './native'
