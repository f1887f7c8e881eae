/**
 * The Promote dialog's body: a form generated from the notebook's typed parameter schema
 * (defaults filled, types checked as you type), the target model, and a preview of the gates
 * with the current champion's values.
 */
import { Dialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { asText, h } from './dom';
import { INotebookInfo, IParameter } from './models';

export interface IPromoteValue {
  parameters: { [name: string]: unknown };
  model: string;
  errors: string[];
}

const INT = /^[-+]?\d+$/;
const FLOAT = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?(inf|nan)$/i;
const MODEL = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;

/** Parse the text typed for one parameter; returns the value or an error message. */
export function parseParameter(
  param: IParameter,
  raw: string | boolean
): { value?: unknown; error?: string } {
  const type = (param.type || 'any').toLowerCase();
  if (typeof raw === 'boolean') {
    return { value: raw };
  }
  const text = raw.trim();
  if (text === '' && (param.nullable || param.default === null) && type !== 'str') {
    return { value: null };
  }
  switch (type) {
    case 'int':
      return INT.test(text)
        ? { value: parseInt(text, 10) }
        : { error: `${param.name} must be an integer` };
    case 'float':
      return FLOAT.test(text) && !Number.isNaN(Number(text))
        ? { value: Number(text) }
        : { error: `${param.name} must be a number` };
    case 'str':
      return { value: raw };
    case 'bool':
      return /^(true|false)$/i.test(text)
        ? { value: text.toLowerCase() === 'true' }
        : { error: `${param.name} must be true or false` };
    default:
      try {
        const value = JSON.parse(text);
        if (type === 'list' && !Array.isArray(value)) {
          return { error: `${param.name} must be a JSON list, e.g. [1, 2]` };
        }
        if (
          type === 'dict' &&
          (value === null || typeof value !== 'object' || Array.isArray(value))
        ) {
          return { error: `${param.name} must be a JSON object, e.g. {"a": 1}` };
        }
        return { value };
      } catch {
        return { error: `${param.name} must be JSON (${type})` };
      }
  }
}

function initialText(param: IParameter): string {
  const type = (param.type || 'any').toLowerCase();
  if (param.default === null || param.default === undefined) {
    return '';
  }
  if (type === 'str' && typeof param.default === 'string') {
    return param.default;
  }
  if (type === 'float' && typeof param.default === 'number' && Number.isInteger(param.default)) {
    return param.default.toFixed(1); // 1.0, not 1: the field shows it is a float
  }
  return JSON.stringify(param.default);
}

export class PromoteForm
  extends Widget
  implements Dialog.IBodyWidget<IPromoteValue>
{
  private readonly readers: Array<() => { name: string; value?: unknown; error?: string }> =
    [];
  private readonly modelInput: HTMLInputElement;

  constructor(
    private readonly info: INotebookInfo,
    previous?: IPromoteValue
  ) {
    super();
    this.addClass('nbm-form');
    const node = this.node;
    node.appendChild(
      h('p', { class: 'nbm-muted' }, 'Notebook: ', h('code', {}, info.path), ' · pipeline ',
        h('code', {}, info.pipeline), ` · ${info.steps.length} step(s)`)
    );
    for (const warning of info.warnings || []) {
      node.appendChild(h('p', { class: 'nbm-warning' }, warning));
    }

    const table = h('div', { class: 'nbm-params' });
    if (info.parameters.length === 0) {
      table.appendChild(h('p', { class: 'nbm-muted' }, 'This notebook declares no parameters.'));
    }
    for (const param of info.parameters) {
      table.appendChild(this.field(param, previous?.parameters[param.name]));
    }
    node.appendChild(h('h3', {}, 'Parameters'));
    node.appendChild(table);

    node.appendChild(h('h3', {}, 'Target model'));
    this.modelInput = h('input', {
      type: 'text',
      class: 'jp-mod-styled nbm-model',
      name: 'model',
      'aria-label': 'model name'
    }) as HTMLInputElement;
    this.modelInput.value = previous?.model ?? info.model;
    const modelError = h('div', { class: 'nbm-error' });
    this.modelInput.addEventListener('input', () => {
      modelError.textContent = MODEL.test(this.modelInput.value.trim())
        ? ''
        : 'letters, digits, "_", ".", "-"';
    });
    node.appendChild(this.modelInput);
    node.appendChild(modelError);

    node.appendChild(h('h3', {}, 'Gates'));
    node.appendChild(this.gates());
  }

  private field(param: IParameter, previous: unknown): HTMLElement {
    const type = (param.type || 'any').toLowerCase();
    const id = `nbm-param-${param.name}`;
    const error = h('div', { class: 'nbm-error', 'data-param-error': param.name });
    let input: HTMLInputElement | HTMLTextAreaElement;
    if (type === 'bool') {
      input = h('input', { type: 'checkbox', id, name: param.name }) as HTMLInputElement;
      (input as HTMLInputElement).checked =
        previous !== undefined ? Boolean(previous) : Boolean(param.default);
    } else if (type === 'list' || type === 'dict' || type === 'any') {
      input = h('textarea', { id, name: param.name, rows: '2', class: 'jp-mod-styled' }) as HTMLTextAreaElement;
      input.value = previous !== undefined ? JSON.stringify(previous) : initialText(param);
    } else {
      input = h('input', { type: 'text', id, name: param.name, class: 'jp-mod-styled' }) as HTMLInputElement;
      input.value =
        previous !== undefined
          ? type === 'str' && typeof previous === 'string'
            ? previous
            : JSON.stringify(previous)
          : initialText(param);
    }
    const read = () => {
      const raw =
        input instanceof HTMLInputElement && input.type === 'checkbox' ? input.checked : input.value;
      return { name: param.name, ...parseParameter(param, raw) };
    };
    const check = () => {
      const result = read();
      error.textContent = result.error ?? '';
      input.classList.toggle('nbm-invalid', Boolean(result.error));
    };
    input.addEventListener('input', check);
    input.addEventListener('change', check);
    this.readers.push(read);
    return h(
      'div',
      { class: 'nbm-field' },
      h('label', { for: id }, param.name, ' ', h('span', { class: 'nbm-type' }, type)),
      input,
      param.help ? h('div', { class: 'nbm-muted' }, param.help) : null,
      error
    );
  }

  private gates(): HTMLElement {
    const info = this.info;
    const problems = info.config_errors || [];
    if (problems.length > 0) {
      return h(
        'div',
        { class: 'nbm-config-errors' },
        h('p', { class: 'nbm-error' }, 'Promotion refuses until the configuration is fixed:'),
        ...problems.map(problem => h('p', { class: 'nbm-error' }, problem))
      );
    }
    if (!info.gates || info.gates.length === 0) {
      return h('p', { class: 'nbm-muted' }, 'No gates configured ([tool.nb_mlops.gates]).');
    }
    const champion = info.champion
      ? `champion: version ${info.champion.version}`
      : 'no champion yet';
    const rows = info.gates.map(g =>
      h('tr', {}, h('td', {}, g.gate), h('td', {}, asText(g.expected)), h('td', {}, asText(g.champion)))
    );
    return h(
      'div',
      {},
      h('p', { class: 'nbm-muted' }, `${info.model}: ${champion}`),
      h(
        'table',
        { class: 'nbm-table nbm-gate-preview' },
        h('thead', {}, h('tr', {}, h('th', {}, 'gate'), h('th', {}, 'requires'), h('th', {}, 'champion'))),
        h('tbody', {}, ...rows)
      )
    );
  }

  getValue(): IPromoteValue {
    const parameters: { [name: string]: unknown } = {};
    const errors: string[] = [];
    for (const read of this.readers) {
      const result = read();
      if (result.error) {
        errors.push(result.error);
      } else {
        parameters[result.name] = result.value;
      }
    }
    const model = this.modelInput.value.trim();
    if (!MODEL.test(model)) {
      errors.push('the model name may hold letters, digits, "_", ".", "-"');
    }
    return { parameters, model, errors };
  }
}
