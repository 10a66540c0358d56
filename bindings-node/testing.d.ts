export { EtcdCluster, EtcdClusterOptions, TestCerts } from './native'
