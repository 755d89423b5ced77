import { createLogger, withLogContext } from './src/logger.js';
const sink = { write: (_: string) => {} } as any;
const log = createLogger('info', sink);
withLogContext({ reqId: 'x' }, () => { for (let i = 0; i < 1000000; i++) log.info({ sessionId: 'ses_1', provider: 'shell', tenant: 'b' }, 'session created'); });
