import type { AsmApp } from '../app.js';

/** Run until SIGINT/SIGTERM, then close the app (and `alsoClose`) and exit; a second signal exits at once. */
export function stopOnSignals(app: AsmApp, alsoClose: () => Promise<void> = async () => {}): void {
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      app.logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    app.logger.info({ signal }, 'stopping');
    await app.close();
    await alsoClose();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}
