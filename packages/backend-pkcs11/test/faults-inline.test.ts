/**
 * The fault suite again, with every local backend forced to sign inline (adaptive dispatch's
 * synchronous path): pool, retry, re-login and circuit guarantees must hold on both paths.
 * (The sign-thread tests in it force threads explicitly and run unchanged.)
 */
process.env.OLOCUS_P11_TEST_DISPATCH = 'inline';
await import('./faults.test.js');
