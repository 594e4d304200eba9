import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { ENCODINGS, INIT_BACKENDS, PKCS11_VENDORS, PUBLIC_KEY_FORMATS, SIGNATURE_FORMATS } from './constants.js';
import { createContext, type CliContext, type GlobalOptions } from './context.js';
import { registerBackupCommands } from './backup-commands.js';
import { CliError, EXIT_ERROR, EXIT_OK, redact, rememberSecret, summarize } from './errors.js';
import { CLOUD_INIT_BACKENDS, mergedCloudInitFlags } from './init-flags.js';
import { echo, installPipeGuards, isClosedPipeError, stdoutClosed, terminalSafe, terminalSafeLine } from './io.js';

/**
 * The command tree. Only commander and node built-ins load here: every action imports its
 * module (and through it core and the backends) when it runs, so `--version` and `--help`
 * stay fast.
 */

export function cliVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** `sign --format` / `verify --format`: a bare signature, or a compact JWS. */
const OUTPUT_FORMATS = ['signature', 'jws'] as const;

type Action<O> = (ctx: CliContext, options: O) => Promise<void>;

interface RunState {
  ctx?: CliContext;
  /** The values the user typed (argv), escaped wherever a printed line repeats them. */
  userValues?: string[];
}

/** Wraps an action: builds the context from the global options and records the exit code. */
function run<O>(load: () => Promise<Action<O>>, state: RunState) {
  return async (options: O, command: Command): Promise<void> => {
    const globals = command.optsWithGlobals<GlobalOptions & O>();
    checkActor(globals.actor);
    const ctx = guardTerminal(createContext(globals), state.userValues ?? []);
    state.ctx = ctx;
    const action = await load();
    await action(ctx, options);
  };
}

/**
 * An actor names a person or service in the key history and the audit log: control characters
 * there (a newline, ESC) can only forge lines or colours wherever it is shown later, so they are
 * refused at the door rather than escaped in every reader.
 */
function checkActor(actor: string | undefined): void {
  if (actor !== undefined && /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/.test(actor)) {
    throw new CliError('InvalidArgument', `--actor: "${echo(actor)}" contains control characters (newline, ESC, ...); give a plain name such as alice or ci-release`);
  }
}

/**
 * Human output is for a terminal: every user value a line repeats (an --actor, a --reason) is
 * shown with its control characters escaped, and no line can carry ESC or another control
 * character at all (values read back from the registry or the log included). `--json` output
 * is not touched: JSON escapes control characters itself and must stay exact. Lines for a
 * closed stdout are dropped (see installPipeGuards).
 */
function guardTerminal(ctx: CliContext, userValues: string[]): CliContext {
  const risky = userValues.filter((v) => terminalSafe(v) !== v).sort((a, b) => b.length - a.length);
  const clean = (line: string): string => {
    let out = line;
    for (const v of risky) if (out.includes(v)) out = out.split(v).join(terminalSafe(v));
    return terminalSafeLine(out);
  };
  const print = ctx.print.bind(ctx);
  const note = ctx.note.bind(ctx);
  const printJson = ctx.printJson.bind(ctx);
  ctx.print = (line = '') => {
    if (!stdoutClosed()) print(clean(line));
  };
  ctx.printJson = (value) => {
    if (!stdoutClosed()) printJson(value);
  };
  ctx.note = (line) => note(clean(line));
  return ctx;
}

/** Every value on the command line, `--flag=value` split. */
function userValuesOf(argv: string[]): string[] {
  return argv.slice(2).flatMap((a) => (a.startsWith('--') && a.includes('=') ? [a, a.slice(a.indexOf('=') + 1)] : [a]));
}

export function buildProgram(state: RunState = {}): Command {
  const program = new Command('olocus-hsm')
    .description('Keys, signatures and benchmarks over an Olocus HSM backend (software, PKCS#11, ...).')
    .version(cliVersion(), '-V, --version', 'print the version')
    .option('--config <path>', 'config file (default: $OLOCUS_HSM_CONFIG, else ./.olocus/config.json)')
    .option('--json', 'machine-readable output on stdout')
    .option('--passphrase-file <path>', 'software backend: read the passphrase from this file')
    .option('--pin-file <path>', 'PKCS#11 backend: read the user PIN from this file')
    .helpCommand(false)
    .showSuggestionAfterError(true);

  const init = program
    .command('init')
    .description('write a config file (default: ./.olocus/config.json for the software backend)')
    .option('--dir <dir>', 'folder for config.json', '.olocus')
    .addOption(
      new Option('--backend <type>', 'backend type (default: software; --module, --token-label, --slot or --vendor imply pkcs11; a cloud type needs its package installed)').choices([
        ...INIT_BACKENDS,
        ...CLOUD_INIT_BACKENDS,
      ]),
    )
    .option('--force', 'overwrite an existing config')
    .option('--passphrase-file <path>', 'software: the new store\'s passphrase (at least 12 characters) from this file; else OLOCUS_HSM_PASSPHRASE, else asked on a terminal')
    .option('--master-key-file <path>', 'software: protect the new store with a master key instead of a passphrase, read from this file (32 random bytes in base64: openssl rand -base64 32)')
    .option('--master-key-env <name>', 'software: the same, from this environment variable (its name, not the key; needed by every later command)')
    .option('--pin-file <path>', 'pkcs11: the user PIN from this file (else OLOCUS_HSM_PIN)')
    .option('--module <path>', 'pkcs11 / aws-cloudhsm: the PKCS#11 library')
    .option('--token-label <label>', 'pkcs11 / aws-cloudhsm: token label')
    .option('--slot <id>', 'pkcs11: slot id')
    .addOption(new Option('--vendor <name>', 'pkcs11: vendor profile').choices(PKCS11_VENDORS));
  // Each flag once, however many clouds take it (--max-concurrency, --request-timeout-ms).
  for (const flag of mergedCloudInitFlags()) init.option(flag.flags, flag.description);
  init.action(run(async () => (await import('./commands/init.js')).init, state));

  const keys = program.command('keys').description('create, list, show, export, rotate, revoke and destroy keys').helpCommand(false);
  keys
    .command('create')
    .description('create a logical key: version 1 (<id>.v1) generated in the backend, registered and Active (--no-rotation: a plain backend key)')
    .requiredOption('--id <id>', 'key id: letters, digits, . _ - :')
    .requiredOption('--algorithm <alg>', 'Ed25519, ECDSA_P256, ECDSA_P384, ECDSA_P521, RSA_2048, RSA_3072, RSA_4096, RSA_PSS_2048, RSA_PSS_3072, RSA_PSS_4096')
    .option('--no-rotation', 'a plain backend key named <id>, not registered for rotation')
    .option('--backup', 'backup-eligible: every version can be exported by "backup create" (PKCS#11: extractable only wrapped under the trusted backup KEK); decided at creation')
    .option('--rotation-interval <duration>', 'rotate on a schedule (e.g. 90d; run by "rotation run"); default: the policy\'s')
    .option('--reason <text>', 'recorded in the key history (default: "create logical key <id>")')
    .option('--actor <name>', 'who makes the change (default: the OS user)')
    .action(run(async () => (await import('./commands/keys.js')).create, state));
  keys
    .command('rotate')
    .description('rotate a logical key: a new version becomes Active, the old one Superseded (verifies by signature time)')
    .requiredOption('--id <id>', 'logical key id')
    .option('--emergency', 'suspected compromise: the old version becomes Compromised at once (needs --reason and policy.allowEmergencyRotation)')
    .option('--reason <text>', 'recorded in the key history (required with --emergency; default: "manual rotation")')
    .option('--actor <name>', 'who makes the change (default: the OS user)')
    .action(run(async () => (await import('./commands/rotation.js')).rotate, state));
  keys
    .command('history')
    .description("a logical key's versions with their states, and every state change (time, from, to, actor, reason)")
    .requiredOption('--id <id>', 'logical key id')
    .action(run(async () => (await import('./commands/rotation.js')).history, state));
  keys
    .command('revoke')
    .description('revoke a version (default: the current one): it never signs or verifies again')
    .requiredOption('--id <id>', 'logical key id')
    .option('--version <n>', 'the version to revoke (default: the Active, else the Suspended one)')
    // `--version` is also the program's; main() routes it after `keys revoke` to this hidden name.
    .addOption(new Option('--key-version <n>').hideHelp())
    .requiredOption('--reason <text>', 'recorded in the key history')
    .option('--actor <name>', 'who makes the change (default: the OS user)')
    .action(run(async () => (await import('./commands/rotation.js')).revoke, state));
  keys
    .command('suspend')
    .description('suspend the Active version: no signing until resumed (or rotated)')
    .requiredOption('--id <id>', 'logical key id')
    .requiredOption('--reason <text>', 'recorded in the key history')
    .option('--actor <name>', 'who makes the change (default: the OS user)')
    .action(run(async () => (await import('./commands/rotation.js')).suspend, state));
  keys
    .command('resume')
    .description('make the Suspended version Active again')
    .requiredOption('--id <id>', 'logical key id')
    .requiredOption('--reason <text>', 'recorded in the key history')
    .option('--actor <name>', 'who makes the change (default: the OS user)')
    .action(run(async () => (await import('./commands/rotation.js')).resume, state));
  keys
    .command('list')
    .description('list keys (every page)')
    .option('--prefix <p>', 'only ids starting with this')
    .action(run(async () => (await import('./commands/keys.js')).list, state));
  keys
    .command('show')
    .description('show one key')
    .requiredOption('--id <id>', 'key id or backend reference')
    .action(run(async () => (await import('./commands/keys.js')).show, state));
  keys
    .command('export-public')
    .description('export a public key')
    .requiredOption('--id <id>', 'key id or backend reference')
    .addOption(new Option('--format <format>', 'output format').choices(PUBLIC_KEY_FORMATS).makeOptionMandatory())
    .option('--out <file>', 'write to this file instead of stdout')
    .action(run(async () => (await import('./commands/keys.js')).exportPublic, state));
  keys
    .command('destroy')
    .description('destroy a key (irreversible)')
    .requiredOption('--id <id>', 'key id or backend reference')
    .action(run(async () => (await import('./commands/keys.js')).destroy, state));

  program
    .command('sign')
    .description('sign a message; ECDSA signatures are DER unless --signature-format raw')
    .requiredOption('--key <ref>', 'logical key (signs with its Active version), key id or backend reference (e.g. pkcs11:id=%0a;type=private)')
    .requiredOption('--in <file>', 'message file, or - for stdin')
    .requiredOption('--out <file>', 'signature file, or - for stdout')
    .addOption(new Option('--format <format>', 'signature: the bare signature; jws: a compact JWS (RFC 7515) with alg and kid').choices(OUTPUT_FORMATS).default('signature'))
    .option('--detached', '--format jws: leave the payload out of the JWS (header..signature); the message stays the file')
    .addOption(new Option('--signature-format <format>', 'ECDSA signature format').choices(SIGNATURE_FORMATS).default('der'))
    .addOption(new Option('--encoding <encoding>', 'signature file encoding').choices(ENCODINGS).default('binary'))
    .action(run(async () => (await import('./commands/sign.js')).sign, state));

  program
    .command('verify')
    .description('verify a signature: exit 0 valid, 1 invalid, 2 error')
    .requiredOption('--key <ref>', 'logical key, key id or backend reference')
    .requiredOption('--in <file>', 'message file, or - for stdin (--format jws without --signature: the JWS with its payload)')
    .option('--signature <file>', 'signature file (at most 64 KiB); with --format jws a detached JWS')
    .addOption(new Option('--format <format>', 'signature: a bare signature; jws: a compact JWS (RFC 7515)').choices(OUTPUT_FORMATS).default('signature'))
    .addOption(new Option('--signature-format <format>', 'ECDSA signature format').choices(SIGNATURE_FORMATS).default('der'))
    .addOption(new Option('--encoding <encoding>', 'signature file encoding').choices(ENCODINGS).default('binary'))
    .option('--signed-at <time>', 'logical keys: when the signature was made (ISO 8601): only the version Active then verifies; needed for a version compromised since')
    .action(run(async () => (await import('./commands/sign.js')).verify, state));

  const rotation = program.command('rotation').description('the key registry: run due scheduler tasks, show status').helpCommand(false);
  rotation
    .command('run')
    .description('run the due scheduler tasks once (rotations, deactivations, cleanups, destructions) and print what ran')
    .option('--daemon', 'keep running: finish rotations of dead processes and run due tasks every --interval, until SIGINT/SIGTERM (clean shutdown, exit 0)')
    .option('--interval <duration>', '--daemon: time between scheduler ticks (e.g. 10s, 1m); default: the policy\'s scheduler.pollInterval')
    .action(run(async () => (await import('./commands/rotation.js')).run, state));
  rotation
    .command('recover')
    .description('complete the interrupted rotation of a key now, whichever process started it (its node is gone); audited')
    .requiredOption('--key <id>', 'logical key id')
    .requiredOption('--reason <text>', 'recorded in the key history and the audit log')
    .option('--actor <name>', 'who makes the change (default: the OS user)')
    .action(run(async () => (await import('./commands/rotation.js')).recover, state));
  rotation
    .command('status')
    .description('logical keys and their Active version, next scheduled tasks, pending destructions, orphans')
    .option('--limit <n>', 'next tasks shown (default 20)')
    .action(run(async () => (await import('./commands/rotation.js')).status, state));

  program
    .command('demo')
    .description('end-to-end demonstration on the embedded default, in a fresh temporary directory')
    .option('--dir <dir>', 'work in this directory instead of a temporary one')
    .option('--keep', 'keep the directory and the keys')
    .action(run(async () => (await import('./commands/demo.js')).demo, state));

  program
    .command('info')
    .description('backend information, capabilities and FIPS status')
    .action(run(async () => (await import('./commands/info.js')).info, state));
  program
    .command('health')
    .description('backend health checks (connectivity, performance, capacity, security, fips): exit 0 Healthy, 1 Degraded, 2 Critical')
    .action(run(async () => (await import('./commands/info.js')).health, state));
  program
    .command('monitor')
    .description('serve /metrics, /healthz, /readyz (503 when Critical) and /status; health checks on an interval, alerts on stderr; runs until SIGINT/SIGTERM')
    .option('--listen <host:port>', 'address to listen on (port 1-65535)', '127.0.0.1:9464')
    .option('--interval <duration>', 'time between health checks (e.g. 30s, 5m)', '30s')
    .option('--warn-days <n>', 'key registry: alert this many days before a cryptoperiod ends or a rotation is due', '30')
    .action(run(async () => (await import('./commands/monitor.js')).monitor, state));

  const audit = program.command('audit').description('the tamper-evident audit log: verify the hash chain and signed checkpoints, export, tail').helpCommand(false);
  audit
    .command('verify')
    .description('check every record and checkpoint; names the first bad record. Exit 0 intact, 1 tampered')
    .action(run(async () => (await import('./commands/audit.js')).verify, state));
  audit
    .command('export')
    .description('write the records and checkpoints as JSON Lines (verifiable offline)')
    .option('--out <file>', 'file to write')
    .option('--from <date>', 'first record time (ISO 8601)')
    .option('--to <date>', 'last record time (ISO 8601)')
    .action(run(async () => (await import('./commands/audit.js')).exportLog, state));
  audit
    .command('tail')
    .description('the latest records (with --json: one JSON object per line)')
    .option('-n, --lines <n>', 'how many records', '20')
    .option('-f, --follow', 'keep printing new records until interrupted')
    .action(run(async () => (await import('./commands/audit.js')).tail, state));
  audit
    .command('rotate-checkpoint-key')
    .description('sign checkpoints with a new key from now on; the change is recorded in the chain and older checkpoints keep verifying with the old key')
    .option('--new-key-id <id>', 'id of the new checkpoint key (default: <current id>-<UTC stamp>)')
    .option('--reason <text>', 'recorded with the change')
    .action(run(async () => (await import('./commands/audit.js')).rotateCheckpointKey, state));

  const compliance = program.command('compliance').description('compliance reports (FIPS 140-2/140-3, PCI DSS v4.0.1, SOC 2, FISMA, Common Criteria)').helpCommand(false);
  compliance
    .command('report')
    .description('evaluate a framework over a period; with --out, writes FILE and its detached signature FILE.sig.json')
    .option('--framework <name>', 'fips-140-2, fips-140-3, pci-dss, soc2, fisma or common-criteria')
    .option('--from <date>', 'start of the period (ISO 8601; default 30 days before --to)')
    .option('--to <date>', 'end of the period (ISO 8601; default now)')
    .option('--format <format>', 'html, md or json', 'html')
    .option('--level <n>', 'FIPS 140 security level required (1-4)')
    .option('--out <file>', 'write the report here (and FILE.sig.json)')
    .action(run(async () => (await import('./commands/compliance.js')).report, state));
  compliance
    .command('verify-report')
    .description("check a report against its detached signature and the audit key's public key. Exit 0 valid, 1 altered")
    .option('--report <file>', 'the report file')
    .option('--signature <file>', 'the signature document (default REPORT.sig.json)')
    .action(run(async () => (await import('./commands/compliance.js')).verifyReport, state));

  // Enterprise: application keys on a pool of backends under key and Cedar policies (@olocus/hsm-enterprise).
  // No --actor here: the enterprise commands name the OS user, and an approval under dual control
  // must not be a name the caller chose.
  const enterprise = async () => import('./commands/enterprise.js');
  const app = program.command('app').description('application keys on the enterprise pool: create under a key policy, sign with policy enforcement, show').helpCommand(false);
  app
    .command('create')
    .description("create an application's key on the pool members its policy places it on, registered for rotation")
    .requiredOption('--app <id>', 'application id (the logical key id)')
    .requiredOption('--policy <file>', 'key policy (JSON): algorithm, allowed operations, placement, FIPS level, ...; check it with "policy validate"')
    .option('--tag <name=value>', 'a tag on the application (Cedar sees it as resource.tags); repeatable', collect, [])
    .action(run(async () => (await enterprise()).appCreate, state));
  app
    .command('sign')
    .description("sign with the application's Active version, if its key policy and the Cedar policies allow the call")
    .requiredOption('--app <id>', 'application id')
    .requiredOption('--in <file>', 'message file, or - for stdin (at most 64 MiB)')
    .requiredOption('--out <file>', 'signature file, or - for stdout')
    .option('--context <name=value>', 'call context for the policies (principal=..., ip=..., tag.NAME=...); repeatable', collect, [])
    .action(run(async () => (await enterprise()).appSign, state));
  app
    .command('show')
    .description("an application's policy, placement, policy version and key versions")
    .requiredOption('--app <id>', 'application id')
    .action(run(async () => (await enterprise()).appShow, state));

  app
    .command('request')
    .description('open a dual-control request (destroy a version, emergency rotation, backup) for approvers to approve')
    .requiredOption('--app <id>', 'application id')
    .requiredOption('--operation <op>', 'destroy, emergency-rotation or backup')
    .requiredOption('--reason <text>', 'why (recorded with the approvals)')
    .option('--key-id <id>', 'destroy: the version to destroy (app.vN)')
    .action(run(async () => (await enterprise()).requestOperation, state));
  app
    .command('backup')
    .description("write a backup bundle of the application's key versions (an approved --request when its policy puts backup under dual control)")
    .requiredOption('--app <id>', 'application id')
    .requiredOption('--out <file>', 'the bundle file (written atomically)')
    .option('--request <id>', 'the approved backup request (app request --operation backup)')
    .action(run(async () => (await enterprise()).appBackup, state));

  const policy = program.command('policy').description('key policies (JSON) and Cedar policies: validate, and explain a decision').helpCommand(false);
  policy
    .command('validate')
    .description('check a key policy (.json) or a Cedar policy file (.cedar) against its schema; needs no config')
    .argument('<file>', 'the policy file')
    .action(withArgument('file', run(async () => (await enterprise()).policyValidate, state)));
  policy
    .command('put')
    .description('store a Cedar policy file in the registry database as a new version (checked against the schema first); loaded when enterprise.policies.registry is true')
    .argument('<file>', 'the .cedar file')
    .requiredOption('--scope <scope>', '"global", or the application id the policy belongs to')
    .requiredOption('--name <name>', 'the policy name within its scope')
    .action(withArgument('file', run(async () => (await enterprise()).policyPut, state)));
  policy
    .command('remove')
    .description('take a policy out of the registry database\'s current set (its history stays)')
    .requiredOption('--scope <scope>', '"global" or an application id')
    .requiredOption('--name <name>', 'the policy name')
    .action(run(async () => (await enterprise()).policyRemove, state));
  policy
    .command('list')
    .description('the current policies in the registry database, or with --scope and --name one policy\'s every version')
    .option('--scope <scope>', '"global" or an application id')
    .option('--name <name>', 'the policy name')
    .action(run(async () => (await enterprise()).policyList, state));
  policy
    .command('test')
    .description("explain the config's Cedar policies' decision on one request: allow or deny, and which policies decided (exit 1 on deny)")
    .requiredOption('--principal <principal>', 'who asks, e.g. caller:alice')
    .requiredOption('--action <operation>', 'the key operation, e.g. sign')
    .requiredOption('--resource <app[/keyId]>', 'the application, optionally one key version (app.v2)')
    .option('--context <name=value>', 'request context (ip=..., tag.NAME=... for resource tags); repeatable', collect, [])
    .option('--algorithm <alg>', "the resource key's algorithm (default ECDSA_P256)")
    .action(run(async () => (await enterprise()).policyTest, state));

  const pool = program.command('pool').description('the enterprise pool of backends').helpCommand(false);
  pool
    .command('status')
    .description('each member: health, circuit, requests in flight, successes and failures; and replica drift against the registry (exit 1 on drift)')
    .action(run(async () => (await enterprise()).poolStatus, state));

  program
    .command('approve')
    .description('approve a dual-control request as the OS user (e.g. destroying an application key); --execute runs it once enough distinct approvers agreed')
    .argument('<request>', 'the request id')
    .option('--execute', 'run the operation if the approvals now suffice')
    .action(withArgument('request', run(async () => (await enterprise()).approve, state)));

  registerBackupCommands(program, (load) => run(load, state));

  program
    .command('bench')
    .description('signing throughput benchmark against the configured backend')
    .option('--algorithm <alg>', 'key algorithm', 'ECDSA_P256')
    .option('--concurrency <list>', 'comma-separated concurrency levels', '1,2,4,16')
    .option('--duration <seconds>', 'seconds per concurrency level', '5')
    .option('--keep-key', 'keep the bench key afterwards')
    .action(run(async () => (await import('./commands/bench.js')).bench, state));

  return program;
}

/** Collects a repeatable option's values. */
function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** A command with one positional argument: the argument joins the options under `name`, as the command functions take it. */
function withArgument<O>(name: string, action: (options: O, command: Command) => Promise<void>) {
  return (value: string, options: Record<string, unknown>, command: Command): Promise<void> => action({ ...options, [name]: value } as O, command);
}

/** Values longer than this are shortened wherever an error message repeats them. */
const LONG_VALUE = 128;

/**
 * A message as shown: a value the user typed that is very long (a pasted blob as --id) is
 * shortened to its start and length wherever it appears, and no user value can break the line.
 */
function shortenEchoes(message: string, userValues: string[]): string {
  let out = message;
  for (const v of [...userValues].sort((a, b) => b.length - a.length)) {
    if (v.length > LONG_VALUE) {
      for (const form of [v, JSON.stringify(v).slice(1, -1)]) if (out.includes(form)) out = out.split(form).join(echo(v));
    }
  }
  return out;
}

function printError(error: unknown, json: boolean, userValues: string[] = []): void {
  const summary = summarize(error);
  summary.message = shortenEchoes(summary.message, userValues);
  if (json && !stdoutClosed()) process.stdout.write(redact(JSON.stringify({ error: summary })) + '\n');
  const shown = terminalSafeLine(userValues.filter((v) => terminalSafe(v) !== v).reduce((m, v) => m.split(v).join(terminalSafe(v)), summary.message));
  const line = shown.split('\n')[0] ?? '';
  process.stderr.write(redact(`olocus-hsm: ${summary.code}: ${line}`) + '\n');
  if (process.env.OLOCUS_HSM_DEBUG === '1' && error instanceof Error) {
    let e: unknown = error;
    while (e instanceof Error) {
      process.stderr.write(redact(e.stack ?? String(e)) + '\n');
      e = e.cause;
      if (e) process.stderr.write('caused by: ');
    }
  }
}

/** Runs the command line; resolves to the process exit code. */
export async function main(argv: string[] = process.argv): Promise<number> {
  rememberSecret(process.env.OLOCUS_HSM_PASSPHRASE);
  rememberSecret(process.env.OLOCUS_HSM_PIN);
  installPipeGuards();
  const jsonWanted = argv.slice(2).includes('--json');
  const userValues = userValuesOf(argv);
  const state: RunState = { userValues };
  const program = buildProgram(state);
  program.exitOverride();
  program.configureOutput({
    // Commander's own errors (unknown option, bad choice, missing option) are reported below.
    outputError: () => {},
  });
  for (const sub of allCommands(program)) {
    sub.exitOverride();
    sub.configureOutput({ outputError: () => {} });
  }
  try {
    if (argv.length <= 2) {
      program.outputHelp();
      return EXIT_ERROR;
    }
    await program.parseAsync(routeRevokeVersion(argv));
    return state.ctx?.exitCode ?? EXIT_OK;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.code === 'commander.help') {
        return error.code === 'commander.help' ? EXIT_ERROR : EXIT_OK;
      }
      printError(new CliError('UsageError', error.message.replace(/^error: /, '')), jsonWanted, userValues);
      return EXIT_ERROR;
    }
    // The reader of stdout went away (`... | head -1`): the command ends quietly, as `cat` does.
    if (stdoutClosed() && isClosedPipeError(error)) return EXIT_OK;
    printError(error, state.ctx?.json ?? jsonWanted, userValues);
    return EXIT_ERROR;
  }
}

/**
 * `keys revoke --version N`: commander gives an option the program also has (`--version`) to the
 * program wherever it appears, so after `keys revoke` it is renamed to the command's hidden
 * `--key-version`. `olocus-hsm --version` is unchanged.
 */
export function routeRevokeVersion(argv: string[]): string[] {
  const args = argv.slice(2);
  const at = args.findIndex((a, i) => a === 'keys' && args[i + 1] === 'revoke');
  if (at === -1) return argv;
  return [...argv.slice(0, 2), ...args.map((a, i) => (i > at + 1 && (a === '--version' || a.startsWith('--version=')) ? a.replace('--version', '--key-version') : a))];
}

function allCommands(command: Command): Command[] {
  return command.commands.flatMap((c) => [c, ...allCommands(c)]);
}
