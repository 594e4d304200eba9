export * from './audit/index.js';
export * from './rules/index.js';
export * from './report/index.js';
