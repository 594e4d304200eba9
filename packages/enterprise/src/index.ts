export * from './pool.js';
export { Pkcs11Replicator, DEFAULT_GROUP_KEK_LABEL, type ReplicaToken, type KekToken, type ReplicationResult } from './replication/pkcs11.js';
export * from './policy.js';
export * from './cedar.js';
export * from './rate-limit.js';
export * from './pool-backend.js';
export * from './manager.js';
export * from './open.js';
export * from './rate-limit-pg.js';
