/**
 * Route validation (src/http/validation.ts): each schema object is compiled once, however many routes
 * and parts use it, and the compiled check still refuses what its schema refuses.
 */
import { Type } from '@sinclair/typebox';
import { describe, expect, it } from 'vitest';
import { compiledCheckOf } from '../../src/http/validation.js';

describe('compiledCheckOf', () => {
  it('compiles a schema object once, and another object on its own even where its JSON is the same', () => {
    const params = Type.Object({ id: Type.String({ minLength: 1 }) });
    const check = compiledCheckOf(params);
    expect(compiledCheckOf(params)).toBe(check);
    expect(check.Check({ id: 'ses_1' })).toBe(true);
    expect(check.Check({ id: '' })).toBe(false);
    // Keyed by the object: an equal schema declared apart gets its own check.
    const other = compiledCheckOf(Type.Object({ id: Type.String({ minLength: 1 }) }));
    expect(other).not.toBe(check);
    expect(other.Check({ id: '' })).toBe(false);
  });
});
