/** The memory store against the shared store contract; its "processes" are one store. */
import { createMemoryStore } from '../../src/store/memory.js';
import type { Store } from '../../src/store/types.js';
import { storeContract } from './contract.js';

storeContract('memory', ({ eventsPerSession }) => {
  let store: Store | undefined;
  return {
    async open() {
      store ??= createMemoryStore({ eventsPerSession });
      return store;
    },
  };
});
