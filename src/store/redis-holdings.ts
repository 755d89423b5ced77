import type { RedisKeys, ScriptRedis } from './redis-schema.js';
import type { HoldingKind, HoldingStore } from './types.js';

/**
 * A tenant's holdings of one kind in one sorted set, scored by the time each was taken: a script
 * checks the count and adds in one step (redis-schema.ts `asmTake`), so processes taking at once
 * never hold more than the limit between them.
 */
export class RedisHoldings implements HoldingStore {
  constructor(
    private readonly redis: ScriptRedis,
    private readonly keys: RedisKeys,
  ) {}

  async take(tenant: string, kind: HoldingKind, id: string, limit: number): Promise<boolean> {
    return (await this.redis.asmTake(this.keys.holdings(tenant, kind), limit, id, Date.now())) === 1;
  }
  async add(tenant: string, kind: HoldingKind, id: string): Promise<void> {
    await this.redis.zadd(this.keys.holdings(tenant, kind), 'NX', Date.now(), id);
  }
  async release(tenant: string, kind: HoldingKind, id: string): Promise<void> {
    await this.redis.zrem(this.keys.holdings(tenant, kind), id);
  }
  takenBefore(tenant: string, kind: HoldingKind, before: number): Promise<string[]> {
    return this.redis.zrangebyscore(this.keys.holdings(tenant, kind), '-inf', `(${before}`);
  }
}
