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
}
