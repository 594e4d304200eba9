/** What the token says about itself (info) and whether it is usable right now (health). */
import type { HealthStatus, HsmInfo } from '@olocus/hsm-core';
import { CKF_TOKEN_INITIALIZED, CKF_TOKEN_PRESENT, CKF_USER_PIN_INITIALIZED, isUnavailable } from './constants.js';
import type { TokenConnection } from './connection.js';
import { trimLabel } from './token.js';

const version = (x: { major: number; minor: number }) => `${x.major}.${x.minor}`;

/** C_GetTokenInfo / C_GetInfo as HsmInfo (may throw pkcs11js errors: the caller maps them). */
export async function tokenInfo(conn: TokenConnection, type: string): Promise<HsmInfo> {
  const p11 = conn.api;
  const { slot, slotNumber, label } = conn.token;
  const token = await p11.C_GetTokenInfo(slot);
  const module = await p11.C_GetInfo();
  return {
    backend: type,
    description: `${conn.vendor.displayName} slot ${slotNumber} token '${label}'`,
    manufacturer: trimLabel(token.manufacturerID),
    model: trimLabel(token.model),
    serialNumber: trimLabel(token.serialNumber),
    firmwareVersion: version(token.firmwareVersion),
    libraryVersion: version(module.libraryVersion),
    details: {
      vendor: conn.vendor.name,
      libraryPath: conn.libraryPath,
      libraryManufacturer: trimLabel(module.manufacturerID),
      libraryDescription: trimLabel(module.libraryDescription),
      cryptokiVersion: version(module.cryptokiVersion),
      slotId: slotNumber,
      tokenLabel: label,
      hardwareVersion: version(token.hardwareVersion),
      tokenFlags: token.flags,
      tokenInitialized: (token.flags & CKF_TOKEN_INITIALIZED) !== 0,
      userPinInitialized: (token.flags & CKF_USER_PIN_INITIALIZED) !== 0,
      loginRequired: (token.flags & 0x4) !== 0,
      writeProtected: (token.flags & 0x2) !== 0,
      rng: (token.flags & 0x1) !== 0,
      sessionCount: isUnavailable(token.sessionCount) ? 'unavailable' : token.sessionCount,
      maxSessionCount: isUnavailable(token.maxSessionCount) ? 'unavailable' : token.maxSessionCount === 0 ? 'unlimited' : token.maxSessionCount,
      readOnly: conn.options.readOnly,
    },
  };
}

/**
 * Cheap checks only: the slot still has the token, C_GetTokenInfo answers, the anchor session is
 * alive. Never signs (a canary signature would be an audited key operation).
 */
export async function tokenHealth(conn: TokenConnection, ready: boolean, details: () => Record<string, string | number | boolean>): Promise<HealthStatus> {
  const started = performance.now();
  const done = (healthy: boolean, message: string): HealthStatus => ({ healthy, latencyMs: performance.now() - started, message, details: details() });
  const { slot, label } = conn.token;
  if (!ready) return done(false, 'not initialized');
  if (conn.loginState.fatal) return done(false, conn.loginState.fatal.message);
  if (conn.circuit.open) return done(false, `circuit open (${conn.circuit.reason}); recovering`);
  try {
    const p11 = conn.api;
    const slotInfo = await p11.C_GetSlotInfo(slot);
    if (!(slotInfo.flags & CKF_TOKEN_PRESENT)) return done(false, `token '${label}' is not present`);
    await p11.C_GetTokenInfo(slot);
    if (conn.anchor && conn.anchor.generation === conn.generation) await p11.C_GetSessionInfo(conn.anchor.handle);
    return done(true, `token '${label}' present, session alive`);
  } catch (error) {
    return done(false, conn.nativeError(error, 'Internal', 'health check').message);
  }
}
