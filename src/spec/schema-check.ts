// schema/cluster.schema.json as the validator, its errors mapped to the user's words and to the
// field's position in the document.

import { Ajv2020 } from 'ajv/dist/2020.js';
import type { ErrorObject, ValidateFunction } from 'ajv';
import schema from '../../schema/cluster.schema.json' with { type: 'json' };
import { Reporter, closest, describe, formatPath, orList, pointerSegments } from './report.js';
import { PLAINTEXT, SECRET_SHAPE, isObject, libvirtUriProblem, pathProblem } from './rules.js';

let compiled: ValidateFunction | undefined;

/** Compiled on first use: compiling costs tens of ms and `pgop get` never needs it. */
export function validator(): ValidateFunction {
  if (!compiled) {
    const ajv = new Ajv2020({
      allErrors: true,
      verbose: true, // errors carry data and parentSchema: needed for messages
      discriminator: true,
      allowUnionTypes: true,
      // The schema is checked against the meta-schema by the unit tests; skipping it here and
      // the code optimizer halves compile time.
      validateSchema: false,
      code: { optimize: false },
    });
    // Non-validating annotation (also understood by VS Code) giving a readable pattern message.
    ajv.addKeyword({ keyword: 'patternErrorMessage', schemaType: 'string' });
    compiled = ajv.compile(schema);
  }
  return compiled;
}

export function schemaProblem(e: ErrorObject, r: Reporter): void {
  const segs = pointerSegments(e.instancePath);
  const data: unknown = e.data;
  const ps = (e.parentSchema ?? {}) as Record<string, unknown>;
  const isSecret = ps === (schema.$defs.secretRef as unknown);
  const params = e.params as Record<string, unknown>;

  switch (e.keyword) {
    case 'additionalProperties': {
      const name = String(params.additionalProperty);
      const known = Object.keys((ps.properties as Record<string, unknown> | undefined) ?? {});
      const guess = closest(name, known);
      r.add([...segs, name], `unknown field "${name}"${guess ? ` (did you mean "${guess}"?)` : ''}`, {
        atKey: true,
      });
      return;
    }
    case 'required': {
      const name = String(params.missingProperty);
      const why = e.schemaPath.includes('/then/') ? ' (required for the lab and libvirt providers)' : '';
      r.add([...segs, name], `missing required field "${name}"${why}`, { at: segs });
      return;
    }
    case 'type': {
      if (isSecret) {
        r.add(segs, typeof data === 'string' || typeof data === 'number' ? PLAINTEXT : SECRET_SHAPE);
        return;
      }
      r.add(
        segs,
        `must be ${orList(([] as string[]).concat(params.type as string | string[]))}, got ${describe(data)}`,
      );
      return;
    }
    case 'minProperties':
    case 'maxProperties':
      r.add(segs, isSecret ? SECRET_SHAPE : `${e.message ?? 'invalid'}`);
      return;
    case 'enum':
      r.add(
        segs,
        `must be one of ${(params.allowedValues as unknown[]).map(String).join(', ')}; got ${describe(data)}`,
      );
      return;
    case 'const':
      r.add(segs, `must be ${JSON.stringify(params.allowedValue)}, got ${describe(data)}`);
      return;
    case 'pattern': {
      const hint =
        typeof ps.patternErrorMessage === 'string'
          ? ps.patternErrorMessage
          : `must match ${String(params.pattern)}`;
      const precise = typeof data === 'string' ? preciseProblem(ps, data) : undefined;
      if (precise !== undefined && e.propertyName === undefined) {
        r.add(segs, `${precise}, got ${describe(data)}`);
      } else if (e.propertyName !== undefined) {
        // From propertyNames: the offending thing is the key itself.
        r.add([...segs, e.propertyName], `invalid name "${e.propertyName}": ${hint}`, { atKey: true });
      } else {
        r.add(segs, `${hint}, got ${describe(data)}`);
      }
      return;
    }
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      r.add(segs, `must be ${String(params.comparison)} ${String(params.limit)}, got ${describe(data)}`);
      return;
    case 'minItems':
      r.add(segs, `must have at least ${String(params.limit)} item${params.limit === 1 ? '' : 's'}`);
      return;
    case 'maxItems':
      r.add(segs, `must have at most ${String(params.limit)} items`);
      return;
    case 'minLength':
      r.add(
        segs,
        params.limit === 1 ? 'must not be empty' : `must be at least ${String(params.limit)} characters`,
      );
      return;
    case 'maxLength':
      if (e.propertyName !== undefined)
        r.add([...segs, e.propertyName], `invalid name: must be at most ${String(params.limit)} characters`, {
          atKey: true,
        });
      else
        r.add(
          segs,
          `must be at most ${String(params.limit)} characters, ` +
            `got ${typeof data === 'string' ? data.length : '?'}`,
        );
      return;
    case 'uniqueItems': {
      const [a, b] = [Number(params.i), Number(params.j)].sort((x, y) => x - y) as [number, number];
      r.add([...segs, b], `duplicate item (also ${formatPath([...segs, a])})`);
      return;
    }
    case 'discriminator': {
      const tag = String(params.tag);
      const value = isObject(data) ? data[tag] : undefined;
      if (value === undefined) return; // `required` already says it is missing
      if (params.error === 'tag') {
        r.add([...segs, tag], `must be string, got ${describe(value)}`);
      } else {
        const options = ((ps.oneOf as Array<{ properties: Record<string, { const: string }> }>) ?? []).map(
          (o) => o.properties[tag]?.const,
        );
        const shown = typeof value === 'string' ? JSON.stringify(value) : describe(value);
        r.add(
          [...segs, tag],
          `unknown ${segs.at(-1) ?? ''} type ${shown}: must be one of ${options.join(', ')}`,
        );
      }
      return;
    }
    case 'if':
    case 'propertyNames':
    case 'oneOf':
    case 'anyOf':
      return; // wrappers: the errors that caused them are reported themselves
    default:
      r.add(segs, e.message ?? `fails ${e.keyword}`);
  }
}

/** The rule a path or URI broke, in words (the schema's pattern says the same in one regex;
 *  test/property/hostile-spec.property.test.ts checks that both agree). */
function preciseProblem(ps: Record<string, unknown>, value: string): string | undefined {
  if (ps === (schema.$defs.absPath as unknown)) return pathProblem('host', value);
  if (ps === (schema.$defs.postgresDir as unknown)) return pathProblem('postgres', value);
  if (ps === (schema.$defs.libvirtUri as unknown)) return libvirtUriProblem(value);
  return undefined;
}
