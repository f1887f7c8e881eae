/**
 * The Promote form's parameter rules: declared types parsed like the pipeline parses them,
 * values checked per type (items included), typed text read back as values, and the text a
 * field shows always reading back as the value it shows.
 */
import fc from 'fast-check';

import type { IParameter } from '../models';
import {
  checkValue,
  declaredType,
  fieldKind,
  initialText,
  isModelName,
  ParamType,
  parseParameter,
  parseType,
  previousText,
  typeLabel,
  typeText
} from '../params';
import { plain } from './translation';

/** The members of a union at the top level: `list[int | None] | str` → two. */
function topMembers(declared: string): string[] {
  const members = [''];
  let depth = 0;
  for (const ch of declared) {
    depth += ch === '[' ? 1 : ch === ']' ? -1 : 0;
    if (ch === '|' && depth === 0) {
      members.push('');
    } else {
      members[members.length - 1] += ch;
    }
  }
  return members.map(m => m.trim());
}

/**
 * A parameter as the server describes it: the widget family is the one non-None member's base
 * type when it is a scalar, list or dict, else `any` (the server's rule, restated).
 */
function param(name: string, declared: string, value?: unknown): IParameter {
  const members = topMembers(declared).filter(m => m !== 'None');
  const base = members.length === 1 ? members[0].split('[')[0] : 'any';
  const known = ['int', 'float', 'bool', 'str', 'list', 'dict'];
  return {
    name,
    type: known.includes(base) ? base : 'any',
    declared_type: declared,
    default: value,
    nullable: members.length < topMembers(declared).length
  };
}

describe('parseType', () => {
  it.each([
    ['int', { kind: 'int' }],
    ['list', { kind: 'list', of: { kind: 'any' } }],
    ['list[str]', { kind: 'list', of: { kind: 'str' } }],
    ['dict[str, float]', { kind: 'dict', of: { kind: 'float' } }],
    [
      'int | None',
      { kind: 'union', members: [{ kind: 'int' }, { kind: 'None' }] }
    ],
    [
      'list[dict[str, int | None]]',
      {
        kind: 'list',
        of: {
          kind: 'dict',
          of: { kind: 'union', members: [{ kind: 'int' }, { kind: 'None' }] }
        }
      }
    ]
  ])('reads %s as the pipeline does', (text, tree) => {
    expect(parseType(text)).toEqual(tree);
  });

  it.each(['tuple', 'dict[int, str]', 'set[int]', 'list[int', 'dict[str]'])(
    'refuses %s, which the pipeline does not accept',
    text => {
      expect(() => parseType(text)).toThrow(/unsupported/);
    }
  );

  it('writes a type back as it was declared', () => {
    for (const text of [
      'int',
      'list[str]',
      'dict[str, list[float | None]]',
      'int | str | None'
    ]) {
      expect(typeText(parseType(text))).toBe(text);
    }
  });

  it('checks a type it does not know as any, so an old client never blocks', () => {
    expect(declaredType(param('x', 'frozenset[int]'))).toEqual({ kind: 'any' });
  });
});

describe('checkValue', () => {
  const ok: Array<[string, unknown]> = [
    ['int', 3],
    ['int', -9007199254740991],
    ['float', 0.5],
    ['float', 2],
    ['str', ''],
    ['bool', false],
    ['None', null],
    ['any', { a: [1, 'x', null] }],
    ['list[int]', []],
    ['list[int]', [1, 2, 3]],
    ['dict[str, float]', { a: 1, b: 0.5 }],
    ['int | None', null],
    ['int | str', 'x'],
    ['list[list[str]]', [['a'], []]]
  ];
  it.each(ok)('accepts for %s the value %j', (type, value) => {
    expect(checkValue(parseType(type), value, 'p', plain)).toBeNull();
  });

  const refused: Array<[string, unknown, string]> = [
    ['int', 1.5, 'p must be an integer'],
    ['int', '3', 'p must be an integer'],
    ['int', true, 'p must be an integer'],
    ['int', 2 ** 60, 'p is too large to be sent exactly'],
    ['float', '0.5', 'p must be a number'],
    ['str', 3, 'p must be a string'],
    ['bool', 'true', 'p must be true or false'],
    ['None', 0, 'p must be null'],
    ['list[int]', { a: 1 }, 'p must be a JSON list, e.g. [1, 2]'],
    ['list[int]', [1, 'x'], 'p[1] must be an integer'],
    ['dict[str, int]', [1], 'p must be a JSON object, e.g. {"a": 1}'],
    ['dict[str, int]', null, 'p must be a JSON object, e.g. {"a": 1}'],
    ['dict[str, int]', { a: 1, b: 'two' }, 'p["b"] must be an integer'],
    ['int | None', 'x', 'p must be int | None'],
    [
      'list[dict[str, bool]]',
      [{ ok: true }, { ok: 1 }],
      'p[1]["ok"] must be true or false'
    ]
  ];
  it.each(refused)(
    'refuses for %s the value %j: "%s"',
    (type, value, message) => {
      expect(checkValue(parseType(type), value, 'p', plain)).toBe(message);
    }
  );
});

describe('parseParameter', () => {
  it.each([
    ['int', '42', 42],
    ['int', ' -7 ', -7],
    ['float', '0.5', 0.5],
    ['float', '1e-3', 0.001],
    ['float', '.5', 0.5],
    ['bool', 'TRUE', true],
    ['str', '  spaced  ', '  spaced  '],
    ['list[int]', '[1, 2]', [1, 2]],
    ['dict[str, float]', '{"a": 1.5}', { a: 1.5 }],
    ['any', '"text"', 'text'],
    ['int | str', '3', 3],
    ['int | None', '', null],
    ['list[str] | None', '', null],
    ['str | None', '', '']
  ])('reads a %s field holding %j as %j', (type, text, value) => {
    expect(parseParameter(param('p', type), text, plain)).toEqual({ value });
  });

  it.each([
    ['int', 'abc', 'p must be an integer'],
    ['int', '1.5', 'p must be an integer'],
    ['int', '', 'p must be an integer'],
    ['int', '99999999999999999999', 'p is too large to be sent exactly'],
    ['float', 'abc', 'p must be a number'],
    ['float', 'inf', 'p must be a number'],
    ['float', 'NaN', 'p must be a number'],
    ['float', '1e999', 'p must be a number'],
    ['bool', 'yes', 'p must be true or false'],
    ['list[int]', '[1, "x"]', 'p[1] must be an integer'],
    ['list[int]', '1, 2', 'p must be JSON (list[int])'],
    ['dict[str, int]', '[]', 'p must be a JSON object, e.g. {"a": 1}'],
    ['int | str', 'abc', 'p must be JSON (int | str)']
  ])('refuses in a %s field the text %j: "%s"', (type, text, error) => {
    expect(parseParameter(param('p', type), text, plain)).toEqual({ error });
  });

  it('reads a checkbox as its state', () => {
    expect(parseParameter(param('flag', 'bool'), false, plain)).toEqual({
      value: false
    });
  });

  it('treats empty text as None for an untyped parameter whose default is None', () => {
    const untyped: IParameter = { name: 'x', type: 'any', default: null };
    expect(parseParameter(untyped, '  ', plain)).toEqual({ value: null });
  });

  it('sends nothing for an emptied field whose default the notebook computes', () => {
    const computed: IParameter = {
      name: 'rows',
      type: 'int',
      default: null,
      has_default: false,
      computed: '10**6'
    };
    expect(parseParameter(computed, '', plain)).toEqual({});
    expect(parseParameter(computed, '12', plain)).toEqual({ value: 12 });
  });
});

describe('fields', () => {
  it.each([
    ['bool', 'checkbox'],
    ['int', 'text'],
    ['float | None', 'text'],
    ['str', 'text'],
    ['list[int]', 'textarea'],
    ['dict[str, int]', 'textarea'],
    ['any', 'textarea'],
    ['int | str', 'textarea']
  ])('gives a %s parameter a %s', (type, kind) => {
    expect(fieldKind(param('p', type))).toBe(kind);
  });

  it('gives a bool whose default the notebook computes a text field (empty sends nothing)', () => {
    expect(fieldKind({ ...param('p', 'bool'), has_default: false })).toBe(
      'text'
    );
  });

  it('labels a field with the declared type, not the widget family', () => {
    expect(typeLabel(param('p', 'list[int] | None'))).toBe('list[int] | None');
    expect(typeLabel({ name: 'p', type: 'int', default: 1 })).toBe('int');
  });

  it.each([
    ['float', 1, '1.0'],
    ['float', 0.25, '0.25'],
    ['int', 300, '300'],
    ['str', 'a "quoted" text', 'a "quoted" text'],
    ['list[str]', ['a', 'b'], '["a","b"]'],
    ['int | None', null, '']
  ])('starts a %s field holding %j as %j', (type, value, text) => {
    expect(initialText(param('p', type, value))).toBe(text);
  });

  it('shows an emptied optional field empty again, not as "null"', () => {
    expect(previousText(param('p', 'int | None'), null)).toBe('');
  });

  it('shows a null typed into a JSON field as null again', () => {
    expect(previousText(param('p', 'any', 1), null)).toBe('null');
  });

  it.each([
    ['quickstart', true],
    ['team.model-v2_final', true],
    ['', false],
    ['-leading-dash', false],
    ['has space', false],
    ['a'.repeat(100), true],
    ['a'.repeat(101), false]
  ])('judges the model name %j valid: %s', (name, valid) => {
    expect(isModelName(name)).toBe(valid);
  });
});

// --- properties: whatever a field shows, it reads back -----------------------------------------

/** A declared type the pipeline accepts, and a value that fits it. */
function typeAndValue(): fc.Arbitrary<[string, unknown]> {
  const { tree } = fc.letrec<{ tree: [ParamType, fc.Arbitrary<unknown>] }>(
    tie => ({
      tree: fc.oneof(
        { depthSize: 'small', withCrossShrink: true },
        fc.constant<[ParamType, fc.Arbitrary<unknown>]>([
          { kind: 'int' },
          fc.integer({ min: -(2 ** 53) + 1, max: 2 ** 53 - 1 })
        ]),
        fc.constant<[ParamType, fc.Arbitrary<unknown>]>([
          { kind: 'float' },
          fc
            .double({ noNaN: true, noDefaultInfinity: true })
            .map(x => (Object.is(x, -0) ? 0 : x))
        ]),
        fc.constant<[ParamType, fc.Arbitrary<unknown>]>([
          { kind: 'str' },
          fc.string()
        ]),
        fc.constant<[ParamType, fc.Arbitrary<unknown>]>([
          { kind: 'bool' },
          fc.boolean()
        ]),
        fc.constant<[ParamType, fc.Arbitrary<unknown>]>([
          { kind: 'any' },
          fc.jsonValue().map(v => JSON.parse(JSON.stringify(v)) as unknown)
        ]),
        tie('tree').map(([of, values]): [ParamType, fc.Arbitrary<unknown>] => [
          { kind: 'list', of },
          fc.array(values, { maxLength: 4 })
        ]),
        tie('tree').map(([of, values]): [ParamType, fc.Arbitrary<unknown>] => [
          { kind: 'dict', of },
          fc.dictionary(fc.string({ maxLength: 5 }), values, { maxKeys: 4 })
        ]),
        tie('tree').map(
          ([member, values]): [ParamType, fc.Arbitrary<unknown>] => [
            { kind: 'union', members: [member, { kind: 'None' }] },
            fc.option(values, { nil: null })
          ]
        )
      )
    })
  ) as { tree: fc.Arbitrary<[ParamType, fc.Arbitrary<unknown>]> };
  return tree.chain(([type, values]) =>
    values.map((value): [string, unknown] => [typeText(type), value])
  );
}

/** What a widget can hold: an emptied str field is "", an unticked box is false. */
function expectedBack(p: IParameter, value: unknown): unknown {
  if (value === null && p.type === 'str') {
    return '';
  }
  if (value === null && p.type === 'bool') {
    return false;
  }
  return value;
}

/** The raw input of a field showing `text` (a checkbox shows a state, not text). */
function rawOf(p: IParameter, value: unknown, text: string): string | boolean {
  return fieldKind(p) === 'checkbox' ? Boolean(value) : text;
}

describe('a field reads back what it shows', () => {
  it('for a value entered before (the dialog shown again)', () => {
    fc.assert(
      fc.property(typeAndValue(), ([type, value]) => {
        const p = param('p', type);
        const read = parseParameter(
          p,
          rawOf(p, value, previousText(p, value)),
          plain
        );
        expect(read).toEqual({ value: expectedBack(p, value) });
      }),
      { numRuns: 400 }
    );
  });

  it('for the default the notebook declares', () => {
    fc.assert(
      fc.property(typeAndValue(), ([type, value]) => {
        const p = param('p', type, value);
        const read = parseParameter(p, rawOf(p, value, initialText(p)), plain);
        expect(read).toEqual({ value: expectedBack(p, value) });
      }),
      { numRuns: 400 }
    );
  });

  it('and every value it accepts fits the declared type', () => {
    fc.assert(
      fc.property(typeAndValue(), fc.string(), ([type], text) => {
        const p = param('p', type);
        const read = parseParameter(p, text, plain);
        if (
          read.error === undefined &&
          !(p.type === 'str' || p.type === 'bool')
        ) {
          expect(
            checkValue(parseType(type), read.value, 'p', plain)
          ).toBeNull();
        }
      }),
      { numRuns: 400 }
    );
  });
});
