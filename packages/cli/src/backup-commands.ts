import type { Command } from 'commander';
import type { CliContext } from './context.js';

/**
 * `backup create|verify|restore|drill`. Registered from main.ts with one line; like every other
 * command, the actions load their module (and @olocus/hsm-backup) only when they run.
 */

type Action<O> = (ctx: CliContext, options: O) => Promise<void>;
type Runner = <O>(load: () => Promise<Action<O>>) => (options: O, command: Command) => Promise<void>;

const SIGNER_HELP = 'trust this backup signer (sha256:<hex> SPKI fingerprint, as backup create prints); else the config folder\'s backup-signers.json, else the backend\'s signer key';

function positional<O>(name: string, action: (options: O, command: Command) => Promise<void>) {
  return (value: string, options: Record<string, unknown>, command: Command): Promise<void> => action({ ...options, [name]: value } as O, command);
}

export function registerBackupCommands(program: Command, run: Runner): void {
  const load = async () => import('./commands/backup.js');
  const backup = program.command('backup').description('signed backup bundles of keys, key registry and audit head: create, verify, restore, drill').helpCommand(false);
  backup
    .command('create')
    .description('write a signed backup bundle; lists the keys that cannot be backed up, with the reason')
    .requiredOption('--out <file>', 'the bundle file (written atomically)')
    .option('--keys <ids>', 'comma-separated logical key ids or key ids')
    .option('--all', 'every logical key and every key of the backend')
    .option('--actor <name>', 'who takes the backup (audit log)')
    .action(run(async () => (await load()).create));
  backup
    .command('schedule')
    .description('one scheduled run (from cron or a systemd timer): back up into DIR when the newest restorable bundle is older than --every, keep the newest --keep, alert (exit 1) when the newest restorable one is older than --max-age')
    .requiredOption('--dir <dir>', 'the folder of scheduled bundles')
    .option('--every <duration>', 'back up when the newest restorable bundle is this old', '24h')
    .option('--keep <n>', 'restorable bundles kept', '7')
    .option('--max-age <duration>', 'alert when the newest restorable bundle is older (default: 1.5 x --every)')
    .option('--keys <ids>', 'comma-separated logical key ids or key ids (default: --all)')
    .option('--actor <name>', 'who runs the schedule (audit log)')
    .action(run(async () => (await load()).schedule));
  backup
    .command('verify')
    .description('check a bundle without its keys: manifest signature and signer, every part\'s hash and fingerprint, internal consistency (exit 1 when it fails)')
    .argument('<file>', 'the bundle')
    .option('--signer <fingerprint>', SIGNER_HELP)
    .action(positional('file', run(async () => (await load()).verify)));
  backup
    .command('restore')
    .description('verify, then restore keys (states kept) and registry rows into the installation of CONFIG; restartable')
    .argument('<file>', 'the bundle')
    .requiredOption('--into <config>', 'the config file of the installation to restore into')
    .option('--dry-run', 'show what would be restored, change nothing')
    .option('--signer <fingerprint>', SIGNER_HELP)
    .option('--actor <name>', 'who restores (audit log)')
    .action(positional('file', run(async () => (await load()).restore)));
  backup
    .command('drill')
    .description('restore into a scratch store, sign with every key, verify with the original public keys (exit 1 if any key fails)')
    .argument('<file>', 'the bundle')
    .option('--scratch-config <config>', 'the scratch backend to restore into (needed for PKCS#11: a scratch token that holds the backup KEK); software: a temporary store by default')
    .option('--signer <fingerprint>', SIGNER_HELP)
    .option('--actor <name>', 'who runs the drill (audit log)')
    .action(positional('file', run(async () => (await load()).drill)));
  // the security officer's ceremony (PKCS#11): PINs only from the environment or files, never argv
  const kekLoad = async () => import('./commands/backup-kek.js');
  const kek = backup.command('kek').description("the backup key-encryption key (PKCS#11): made on the backup token, enrolled on the tokens that export or restore keys (security officer)").helpCommand(false);
  kek
    .command('create')
    .description('generate the AES-256 backup KEK on a token, by its security officer (trusted, wraps only; never leaves a token in clear)')
    .requiredOption('--token <label>', 'the backup token')
    .option('--module <path>', "the PKCS#11 library (default: the config's pkcs11 libraryPath)")
    .option('--label <label>', 'the KEK label (default: olocus-backup-kek, what backends look for)')
    .option('--so-pin-env <var>', "the environment variable holding the token's SO PIN")
    .option('--so-pin-file <file>', "a file holding the token's SO PIN")
    .action(run(async () => (await kekLoad()).kekCreate));
  kek
    .command('enroll')
    .description('carry the KEK to another token over an RSA-OAEP transport made for the occasion (never in clear); with --to-pin the token may restore keys, with --export-only nothing on it may unwrap')
    .requiredOption('--from <label>', 'the token that holds the KEK (the backup token)')
    .requiredOption('--to <label>', 'the token that receives it')
    .option('--module <path>', "the PKCS#11 library (default: the config's pkcs11 libraryPath)")
    .option('--label <label>', 'the KEK label (default: olocus-backup-kek)')
    .option('--from-so-pin-env <var>', 'SO PIN of --from, from this environment variable')
    .option('--from-so-pin-file <file>', 'SO PIN of --from, from this file')
    .option('--to-so-pin-env <var>', 'SO PIN of --to, from this environment variable')
    .option('--to-so-pin-file <file>', 'SO PIN of --to, from this file')
    .option('--to-pin-env <var>', "user PIN of --to (its user makes the KEK's private unwrap-only half), from this environment variable")
    .option('--to-pin-file <file>', 'user PIN of --to, from this file')
    .option('--export-only', 'nothing on --to may unwrap: a token that only exports keys (the safest production setup)')
    .action(run(async () => (await kekLoad()).kekEnroll));
}
