/**
 * A gRPC proxy in front of a real Cloud KMS implementation (gcp-kms-emulator) that answers
 * RESOURCE_EXHAUSTED while told to, and otherwise forwards every call byte for byte (the
 * messages are not decoded: the service definition from Google's protos only routes them).
 */
import { Server, ServerCredentials, credentials, makeGenericClientConstructor, status, type ServiceDefinition, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import { loadService } from './kms-fake.js';

const identity = (b: Buffer) => b;

export class ThrottlingProxy {
  port = 0;
  throttleUntil = 0;
  throttled = 0;
  forwarded = 0;
  private server: Server | undefined;
  private client: InstanceType<ReturnType<typeof makeGenericClientConstructor>> | undefined;

  constructor(private readonly targetPort: number) {}

  async start(): Promise<number> {
    const raw: ServiceDefinition = Object.fromEntries(
      Object.entries(loadService()).map(([key, method]) => [
        key,
        { ...method, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity },
      ]),
    );
    const Client = makeGenericClientConstructor(raw, 'KeyManagementService');
    const client = new Client(`127.0.0.1:${this.targetPort}`, credentials.createInsecure());
    this.client = client;
    const implementation: Record<string, (call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>) => void> = {};
    for (const key of Object.keys(raw)) {
      implementation[key] = (call, callback) => {
        if (Date.now() < this.throttleUntil) {
          this.throttled++;
          callback({ code: status.RESOURCE_EXHAUSTED, details: 'Quota exceeded for quota metric cryptographic requests (injected by the test proxy)' });
          return;
        }
        this.forwarded++;
        (client as unknown as Record<string, (r: Buffer, cb: (e: unknown, r?: Buffer) => void) => void>)[key]!(call.request, (error, response) => callback(error as never, response));
      };
    }
    const server = new Server();
    server.addService(raw, implementation);
    this.port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, port) => (error ? reject(error) : resolve(port))),
    );
    this.server = server;
    return this.port;
  }

  async stop(): Promise<void> {
    this.client?.close();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  }
}
