import { constants, createHash, generateKeyPairSync, privateEncrypt, randomBytes, randomUUID, sign as nodeSign, type KeyObject } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

/**
 * A project-owned AWS KMS speaking the AWS JSON 1.1 protocol (X-Amz-Target: TrentService.*),
 * written from the AWS KMS API Reference, for what neither emulator does: Ed25519
 * (ECC_NIST_EDWARDS25519 with ED25519_SHA_512, MessageType RAW only, Message 1–4096 bytes) and
 * RSA-PSS as AWS signs it (salt length = digest length), with RSA PKCS#1 v1.5 beside it. ECDSA is
 * left to local-kms. It implements only the operations the
 * backend calls, with AWS's validation rules for them; it proves nothing about IAM or latency.
 */
export interface FakeKms {
  endpoint: string;
  port: number;
  close(): Promise<void>;
}

interface FakeKey {
  id: string;
  arn: string;
  spec: string;
  state: 'Enabled' | 'Disabled' | 'PendingDeletion';
  created: number;
  tags: Array<{ TagKey: string; TagValue: string }>;
  privateKey: KeyObject;
  spki: Buffer;
}

const SIGNING: Record<string, string[]> = {
  ECC_NIST_EDWARDS25519: ['ED25519_SHA_512'],
  RSA_2048: ['RSASSA_PKCS1_V1_5_SHA_256', 'RSASSA_PSS_SHA_256'],
  RSA_3072: ['RSASSA_PKCS1_V1_5_SHA_256', 'RSASSA_PSS_SHA_256'],
  RSA_4096: ['RSASSA_PKCS1_V1_5_SHA_256', 'RSASSA_PSS_SHA_256'],
};

class AwsError extends Error {
  constructor(
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

export async function startFakeKms(region = 'eu-west-1', account = '111122223333'): Promise<FakeKms> {
  const keys = new Map<string, FakeKey>();
  const aliases = new Map<string, string>();
  const prefix = `arn:aws:kms:${region}:${account}`;

  const find = (ref: unknown): FakeKey => {
    if (typeof ref !== 'string' || ref.length === 0) throw new AwsError('ValidationException', 'KeyId is required');
    let id = ref;
    if (ref.startsWith(`${prefix}:alias/`)) id = ref.slice(prefix.length + 1);
    if (id.startsWith('alias/')) {
      const target = aliases.get(id);
      if (!target) throw new AwsError('NotFoundException', `Alias ${prefix}:${id} is not found.`);
      id = target;
    }
    if (id.startsWith(`${prefix}:key/`)) id = id.slice(`${prefix}:key/`.length);
    const key = keys.get(id);
    if (!key) throw new AwsError('NotFoundException', `Key '${prefix}:key/${id}' does not exist`);
    return key;
  };
  const metadata = (k: FakeKey) => ({
    AWSAccountId: account,
    KeyId: k.id,
    Arn: k.arn,
    CreationDate: k.created,
    Enabled: k.state === 'Enabled',
    KeyState: k.state,
    KeyUsage: 'SIGN_VERIFY',
    KeySpec: k.spec,
    CustomerMasterKeySpec: k.spec,
    KeyManager: 'CUSTOMER',
    Origin: 'AWS_KMS',
    SigningAlgorithms: SIGNING[k.spec],
  });

  const ops: Record<string, (body: Record<string, unknown>) => unknown> = {
    ListAliases: () => ({ Aliases: [...aliases].map(([name, target]) => ({ AliasName: name, AliasArn: `${prefix}:${name}`, TargetKeyId: target })), Truncated: false }),
    ListKeys: () => ({ Keys: [...keys.values()].map((k) => ({ KeyId: k.id, KeyArn: k.arn })), Truncated: false }),
    CreateKey: (body) => {
      const spec = String(body.KeySpec);
      if (!SIGNING[spec]) throw new AwsError('ValidationException', `KeySpec ${spec} is not supported by this fake`);
      if (body.KeyUsage !== 'SIGN_VERIFY') throw new AwsError('ValidationException', 'KeyUsage must be SIGN_VERIFY for asymmetric signing keys');
      const pair = spec === 'ECC_NIST_EDWARDS25519' ? generateKeyPairSync('ed25519') : generateKeyPairSync('rsa', { modulusLength: Number(spec.slice(4)), publicExponent: 0x10001 });
      const id = randomUUID();
      const key: FakeKey = {
        id,
        arn: `${prefix}:key/${id}`,
        spec,
        state: 'Enabled',
        created: Date.now() / 1000,
        tags: (body.Tags as FakeKey['tags'] | undefined) ?? [],
        privateKey: pair.privateKey,
        spki: pair.publicKey.export({ format: 'der', type: 'spki' }),
      };
      keys.set(id, key);
      return { KeyMetadata: metadata(key) };
    },
    CreateAlias: (body) => {
      const name = String(body.AliasName);
      if (!/^alias\/[a-zA-Z0-9/_-]+$/.test(name) || name.length > 256) throw new AwsError('ValidationException', `invalid alias name ${name}`);
      if (aliases.has(name)) throw new AwsError('AlreadyExistsException', `An alias with the name ${prefix}:${name} already exists`);
      aliases.set(name, find(body.TargetKeyId).id);
      return {};
    },
    DeleteAlias: (body) => {
      if (!aliases.delete(String(body.AliasName))) throw new AwsError('NotFoundException', `Alias ${String(body.AliasName)} is not found.`);
      return {};
    },
    DescribeKey: (body) => ({ KeyMetadata: metadata(find(body.KeyId)) }),
    ListResourceTags: (body) => ({ Tags: find(body.KeyId).tags, Truncated: false }),
    GetPublicKey: (body) => {
      const k = find(body.KeyId);
      if (k.state === 'PendingDeletion') throw new AwsError('KMSInvalidStateException', `${k.arn} is pending deletion.`);
      return { KeyId: k.arn, PublicKey: k.spki.toString('base64'), KeySpec: k.spec, KeyUsage: 'SIGN_VERIFY', SigningAlgorithms: SIGNING[k.spec] };
    },
    ScheduleKeyDeletion: (body) => {
      const k = find(body.KeyId);
      if (k.state === 'PendingDeletion') throw new AwsError('KMSInvalidStateException', `${k.arn} is pending deletion.`);
      const days = Number(body.PendingWindowInDays ?? 30);
      if (!Number.isInteger(days) || days < 7 || days > 30) throw new AwsError('ValidationException', 'PendingWindowInDays must be between 7 and 30');
      k.state = 'PendingDeletion';
      return { KeyId: k.arn, KeyState: k.state, DeletionDate: Date.now() / 1000 + days * 86400, PendingWindowInDays: days };
    },
    Sign: (body) => {
      const k = find(body.KeyId);
      if (k.state === 'Disabled') throw new AwsError('DisabledException', `${k.arn} is disabled.`);
      if (k.state === 'PendingDeletion') throw new AwsError('KMSInvalidStateException', `${k.arn} is pending deletion.`);
      const message = Buffer.from(String(body.Message ?? ''), 'base64');
      // AWS: Message has a minimum length of 1 and a maximum length of 4096
      if (message.length < 1 || message.length > 4096) throw new AwsError('ValidationException', "1 validation error detected: Value at 'message' failed to satisfy constraint: Member must have length between 1 and 4096");
      const algorithm = String(body.SigningAlgorithm);
      const type = String(body.MessageType ?? 'RAW');
      if (!SIGNING[k.spec]!.includes(algorithm)) throw new AwsError('InvalidKeyUsageException', `Algorithm ${algorithm} is incompatible with key spec ${k.spec}.`);
      let signature: Buffer;
      if (algorithm === 'ED25519_SHA_512') {
        if (type !== 'RAW') throw new AwsError('ValidationException', 'ED25519_SHA_512 requires MessageType RAW');
        signature = nodeSign(null, message, k.privateKey);
      } else {
        if (type === 'DIGEST' && message.length !== 32) throw new AwsError('ValidationException', `Digest is invalid length for algorithm ${algorithm}.`);
        const digest = type === 'DIGEST' ? message : createHash('sha256').update(message).digest();
        signature = algorithm.startsWith('RSASSA_PSS') ? pssSignDigest(digest, k.privateKey) : privateEncrypt({ key: k.privateKey, padding: constants.RSA_PKCS1_PADDING }, Buffer.concat([SHA256_DIGEST_INFO, digest]));
      }
      return { KeyId: k.arn, Signature: signature.toString('base64'), SigningAlgorithm: algorithm };
    },
  };

  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const operation = String(req.headers['x-amz-target'] ?? '').replace(/^TrentService\./, '');
      const send = (status: number, body: unknown) => {
        res.writeHead(status, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': randomUUID() });
        res.end(JSON.stringify(body));
      };
      if (!String(req.headers.authorization ?? '').startsWith('AWS4-HMAC-SHA256 ')) return send(400, { __type: 'MissingAuthenticationTokenException', message: 'Missing Authentication Token' });
      const handler = ops[operation];
      if (!handler) return send(400, { __type: 'UnknownOperationException', message: `${operation} is not implemented by the fake` });
      try {
        send(200, handler(JSON.parse(Buffer.concat(chunks).toString() || '{}') as Record<string, unknown>));
      } catch (error) {
        if (error instanceof AwsError) send(400, { __type: error.type, message: error.message });
        else send(500, { __type: 'KMSInternalException', message: String(error) });
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const SHA256_DIGEST_INFO = Buffer.from('3031300d060960864801650304020105000420', 'hex');

/** RSASSA-PSS (RFC 8017 §9.1.1) over a SHA-256 digest, MGF1-SHA-256, salt = 32 bytes: what AWS KMS does. */
function pssSignDigest(digest: Buffer, privateKey: KeyObject): Buffer {
  const modBits = privateKey.asymmetricKeyDetails!.modulusLength!;
  const emBits = modBits - 1;
  const emLen = Math.ceil(emBits / 8);
  const salt = randomBytes(32);
  const h = createHash('sha256').update(Buffer.concat([Buffer.alloc(8), digest, salt])).digest();
  const db = Buffer.concat([Buffer.alloc(emLen - salt.length - h.length - 2), Buffer.from([0x01]), salt]);
  const mask = mgf1(h, db.length);
  for (let i = 0; i < db.length; i++) db[i]! ^= mask[i]!;
  db[0]! &= 0xff >> (8 * emLen - emBits);
  const em = Buffer.concat([db, h, Buffer.from([0xbc])]);
  const padded = em.length < modBits / 8 ? Buffer.concat([Buffer.alloc(modBits / 8 - em.length), em]) : em;
  return privateEncrypt({ key: privateKey, padding: constants.RSA_NO_PADDING }, padded);
}

function mgf1(seed: Buffer, length: number): Buffer {
  const out: Buffer[] = [];
  for (let counter = 0; out.length * 32 < length; counter++) {
    const c = Buffer.alloc(4);
    c.writeUInt32BE(counter);
    out.push(createHash('sha256').update(Buffer.concat([seed, c])).digest());
  }
  return Buffer.concat(out).subarray(0, length);
}
