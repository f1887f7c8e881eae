/**
 * The Promote form's rules for one declared parameter, free of widgets: which input it gets,
 * the text it starts with, and how typed text becomes a value of the declared type (the same
 * types the pipeline accepts: int, float, str, bool, list[T], dict[str, T], unions, any).
 */
import type { TranslationBundle } from '@jupyterlab/translation';

import type { IParameter } from './models';

/** A declared type as a small tree (the pipeline's own type grammar). */
export type ParamType =
  | { kind: 'int' | 'float' | 'str' | 'bool' | 'any' | 'None' }
  | { kind: 'list' | 'dict'; of: ParamType }
  | { kind: 'union'; members: ParamType[] };

/** What the user typed or ticked, read back: a value, or an error naming the parameter. */
export interface IParsed {
  value?: unknown;
  error?: string;
}

/** The input a parameter gets. */
export type FieldKind = 'checkbox' | 'textarea' | 'text';

const INT = /^[-+]?\d+$/;
const FLOAT = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;
const MODEL = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;
const SCALARS = ['int', 'float', 'str', 'bool', 'any', 'None'];
const ANY: ParamType = { kind: 'any' };

/** Split `text` at `sep` outside brackets: `dict[str, int] | None` → two members. */
function splitTop(text: string, sep: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '[') {
      depth++;
    } else if (ch === ']') {
      depth--;
    } else if (ch === sep && depth === 0) {
      parts.push(text.slice(start, i).trim());
      start = i + 1;
    }
  }
  parts.push(text.slice(start).trim());
  return parts;
}

/**
 * Parse a declared type string such as `list[int]`, `dict[str, float]` or `int | None`.
 *
 * @throws Error when the string is not one of the pipeline's types.
 */
export function parseType(text: string): ParamType {
  const members = splitTop(text.trim(), '|');
  if (members.length > 1) {
    return { kind: 'union', members: members.map(parseType) };
  }
  const one = members[0];
  if (SCALARS.includes(one)) {
    return { kind: one as 'int' };
  }
  if (one === 'list' || one === 'dict') {
    return { kind: one, of: ANY };
  }
  if (one.startsWith('list[') && one.endsWith(']')) {
    return { kind: 'list', of: parseType(one.slice(5, -1)) };
  }
  if (one.startsWith('dict[') && one.endsWith(']')) {
    const [key, ...rest] = splitTop(one.slice(5, -1), ',');
    if (key !== 'str' || rest.length !== 1) {
      throw new Error(`unsupported dict type ${JSON.stringify(one)}`);
    }
    return { kind: 'dict', of: parseType(rest[0]) };
  }
  throw new Error(`unsupported type ${JSON.stringify(one)}`);
}

/** The type as the notebook declares it (`int | None`), for labels and messages. */
export function typeText(type: ParamType): string {
  switch (type.kind) {
    case 'union':
      return type.members.map(typeText).join(' | ');
    case 'list':
      return `list[${typeText(type.of)}]`;
    case 'dict':
      return `dict[str, ${typeText(type.of)}]`;
    default:
      return type.kind;
  }
}

/** The widget family the server chose (`int`, `list`, `any`, …), lower case. */
export function uiType(param: IParameter): string {
  return (param.type || 'any').toLowerCase();
}

/** The declared type tree; a type this client does not know is checked as `any`. */
export function declaredType(param: IParameter): ParamType {
  try {
    return parseType(param.declared_type || param.type || 'any');
  } catch {
    return ANY;
  }
}

/** The label shown next to the parameter's name: its declared type. */
export function typeLabel(param: IParameter): string {
  return param.declared_type || uiType(param);
}

/** Checkbox for bool, a JSON text area for list, dict and any, a text line otherwise. */
export function fieldKind(param: IParameter): FieldKind {
  const type = uiType(param);
  if (type === 'bool' && param.has_default !== false) {
    return 'checkbox';
  }
  return type === 'list' || type === 'dict' || type === 'any'
    ? 'textarea'
    : 'text';
}

function isPlainObject(value: unknown): value is { [key: string]: unknown } {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** The message for a value that is not of `type` (the parameter, or one of its items). */
function mismatch(
  type: ParamType,
  name: string,
  trans: TranslationBundle
): string {
  switch (type.kind) {
    case 'int':
      return trans.__('%1 must be an integer', name);
    case 'float':
      return trans.__('%1 must be a number', name);
    case 'str':
      return trans.__('%1 must be a string', name);
    case 'bool':
      return trans.__('%1 must be true or false', name);
    case 'None':
      return trans.__('%1 must be null', name);
    case 'list':
      return trans.__('%1 must be a JSON list, e.g. [1, 2]', name);
    case 'dict':
      return trans.__('%1 must be a JSON object, e.g. {"a": 1}', name);
    default:
      return trans.__('%1 must be %2', name, typeText(type));
  }
}

/**
 * Check a JSON value against a declared type, items included, as the pipeline will.
 *
 * Integers must be exact in JavaScript (at most 2^53), as the pipeline demands of a float
 * standing for an int; floats accept integers.
 *
 * @returns null when the value fits, else a message naming `name` (or the item: `xs[2]`).
 */
export function checkValue(
  type: ParamType,
  value: unknown,
  name: string,
  trans: TranslationBundle
): string | null {
  switch (type.kind) {
    case 'any':
      return null;
    case 'None':
      return value === null ? null : mismatch(type, name, trans);
    case 'bool':
      return typeof value === 'boolean' ? null : mismatch(type, name, trans);
    case 'str':
      return typeof value === 'string' ? null : mismatch(type, name, trans);
    case 'float':
      return typeof value === 'number' && Number.isFinite(value)
        ? null
        : mismatch(type, name, trans);
    case 'int':
      if (typeof value === 'number' && Number.isInteger(value)) {
        return Number.isSafeInteger(value)
          ? null
          : trans.__('%1 is too large to be sent exactly', name);
      }
      return mismatch(type, name, trans);
    case 'list': {
      if (!Array.isArray(value)) {
        return mismatch(type, name, trans);
      }
      for (let i = 0; i < value.length; i++) {
        const error = checkValue(type.of, value[i], `${name}[${i}]`, trans);
        if (error) {
          return error;
        }
      }
      return null;
    }
    case 'dict': {
      if (!isPlainObject(value)) {
        return mismatch(type, name, trans);
      }
      for (const [key, item] of Object.entries(value)) {
        const itemName = `${name}[${JSON.stringify(key)}]`;
        const error = checkValue(type.of, item, itemName, trans);
        if (error) {
          return error;
        }
      }
      return null;
    }
    case 'union': {
      const fits = type.members.some(
        member => checkValue(member, value, name, trans) === null
      );
      return fits ? null : mismatch(type, name, trans);
    }
  }
}

/** True when an empty field means None: the parameter may be None and is not a `str`. */
export function emptyIsNull(param: IParameter): boolean {
  return (param.nullable || param.default === null) && uiType(param) !== 'str';
}

/**
 * Read the text typed for one parameter (or a checkbox's state) as a value of its type.
 *
 * Empty text means null for a parameter that may be None (except a `str`, where it is "").
 * List, dict and any fields hold JSON, checked against the declared item types.
 */
export function parseParameter(
  param: IParameter,
  raw: string | boolean,
  trans: TranslationBundle
): IParsed {
  const type = uiType(param);
  if (typeof raw === 'boolean') {
    return { value: raw };
  }
  const text = raw.trim();
  if (text === '' && param.has_default === false) {
    return {}; // left empty: the notebook's parameters cell computes its default
  }
  if (
    text === '' &&
    (param.nullable || param.default === null) &&
    type !== 'str'
  ) {
    return { value: null };
  }
  switch (type) {
    case 'int': {
      if (!INT.test(text)) {
        return { error: mismatch({ kind: 'int' }, param.name, trans) };
      }
      const value = Number(text);
      const error = checkValue({ kind: 'int' }, value, param.name, trans);
      return error ? { error } : { value };
    }
    case 'float': {
      const value = Number(text);
      return FLOAT.test(text) && Number.isFinite(value)
        ? { value }
        : { error: mismatch({ kind: 'float' }, param.name, trans) };
    }
    case 'str':
      return { value: raw };
    case 'bool':
      return /^(true|false)$/i.test(text)
        ? { value: text.toLowerCase() === 'true' }
        : { error: mismatch({ kind: 'bool' }, param.name, trans) };
    default: {
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch {
        return {
          error: trans.__('%1 must be JSON (%2)', param.name, typeLabel(param))
        };
      }
      const error = checkValue(declaredType(param), value, param.name, trans);
      return error ? { error } : { value };
    }
  }
}

/** The text a field starts with: the notebook's default, a float shown as a float (1.0). */
export function initialText(param: IParameter): string {
  const type = uiType(param);
  if (param.default === null || param.default === undefined) {
    return '';
  }
  if (type === 'str' && typeof param.default === 'string') {
    return param.default;
  }
  if (
    type === 'float' &&
    typeof param.default === 'number' &&
    Number.isInteger(param.default)
  ) {
    return param.default.toFixed(1); // 1.0, not 1: the field shows it is a float
  }
  return JSON.stringify(param.default);
}

/** The text a field shows again for a value the user already entered (dialog re-opened). */
export function previousText(param: IParameter, previous: unknown): string {
  if (previous === undefined) {
    return '';
  }
  if (previous === null) {
    // empty where empty reads as None (or as "" in a str field); JSON elsewhere
    return emptyIsNull(param) || uiType(param) === 'str' ? '' : 'null';
  }
  if (uiType(param) === 'str' && typeof previous === 'string') {
    return previous;
  }
  return JSON.stringify(previous);
}

/** A checkbox's initial state: the value entered before, else the default. */
export function initialChecked(param: IParameter, previous: unknown): boolean {
  return previous !== undefined ? Boolean(previous) : Boolean(param.default);
}

/** True when `name` is a valid registered-model name. */
export function isModelName(name: string): boolean {
  return MODEL.test(name.trim());
}
