/**
 * The Promote form generated from a notebook's parameter schema, in jsdom: one field per
 * parameter with the right input and default, type errors shown as the user types, the value
 * the dialog hands back, and every word of the form translated.
 */
import type { INotebookInfo } from '../models';
import { PromoteForm } from '../form';
import { markingBundle, plain, untranslated } from './translation';

const INFO: INotebookInfo = {
  path: 'notebooks/quickstart.ipynb',
  pipeline: 'quickstart',
  model: 'quickstart',
  steps: [
    { name: 'prepare', after: [] },
    { name: 'train', after: ['prepare'] }
  ],
  parameters: [
    { name: 'C', type: 'float', declared_type: 'float', default: 1 },
    { name: 'max_iter', type: 'int', declared_type: 'int', default: 300 },
    { name: 'scale', type: 'bool', declared_type: 'bool', default: true },
    {
      name: 'cols',
      type: 'list',
      declared_type: 'list[str]',
      default: ['a', 'b']
    },
    {
      name: 'weights',
      type: 'dict',
      declared_type: 'dict[str, float]',
      default: { a: 0.5 }
    },
    {
      name: 'tag',
      type: 'str',
      declared_type: 'str | None',
      default: null,
      nullable: true
    },
    {
      name: 'limit',
      type: 'int',
      declared_type: 'int | None',
      default: null,
      nullable: true
    },
    { name: 'extra', type: 'any', declared_type: 'any', default: null }
  ],
  champion: { version: '1', run_id: 'r1', metrics: { accuracy: 0.9 } },
  gates: [{ gate: 'metric:accuracy', expected: '>= 0.5', champion: 0.9 }],
  runs: [],
  ui_url: 'http://127.0.0.1:5000',
  warnings: ['gates: something to know']
};

function field(form: PromoteForm, name: string): HTMLInputElement {
  const node = form.node.querySelector(`#nbm-param-${name}`);
  if (!node) {
    throw new Error(`no field for ${name}`);
  }
  return node as HTMLInputElement;
}

function type(input: HTMLInputElement, text: string): void {
  input.value = text;
  input.dispatchEvent(new Event('input'));
}

function errorOf(form: PromoteForm, name: string): string {
  return (
    form.node.querySelector(`[data-param-error="${name}"]`)?.textContent ?? ''
  );
}

describe('PromoteForm', () => {
  it('has one field per parameter, with the input its type needs', () => {
    const form = new PromoteForm(INFO, plain);
    const kinds = INFO.parameters.map(p => {
      const input = field(form, p.name);
      return [p.name, input.tagName.toLowerCase(), input.type];
    });
    expect(kinds).toEqual([
      ['C', 'input', 'text'],
      ['max_iter', 'input', 'text'],
      ['scale', 'input', 'checkbox'],
      ['cols', 'textarea', 'textarea'],
      ['weights', 'textarea', 'textarea'],
      ['tag', 'input', 'text'],
      ['limit', 'input', 'text'],
      ['extra', 'textarea', 'textarea']
    ]);
  });

  it('starts every field at the notebook default', () => {
    const form = new PromoteForm(INFO, plain);
    expect(field(form, 'C').value).toBe('1.0');
    expect(field(form, 'max_iter').value).toBe('300');
    expect(field(form, 'scale').checked).toBe(true);
    expect(field(form, 'cols').value).toBe('["a","b"]');
    expect(field(form, 'weights').value).toBe('{"a":0.5}');
    expect(field(form, 'tag').value).toBe('');
    expect(field(form, 'limit').value).toBe('');
    expect(form.getValue()).toEqual({
      parameters: {
        C: 1,
        max_iter: 300,
        scale: true,
        cols: ['a', 'b'],
        weights: { a: 0.5 },
        tag: '',
        limit: null,
        extra: null
      },
      model: 'quickstart',
      errors: []
    });
  });

  it('shows configuration problems instead of the gates: promotion refuses until fixed', () => {
    const info = {
      ...INFO,
      config_errors: ['gates: did you mean `gates`? (`gate`)']
    };
    const form = new PromoteForm(info, plain);
    const shown =
      form.node.querySelector('.nbm-config-errors')?.textContent ?? '';
    expect(shown).toContain(
      'Promotion refuses until the configuration is fixed:'
    );
    expect(shown).toContain('gates: did you mean `gates`? (`gate`)');
    expect(form.node.querySelector('table')).toBeNull();
  });

  it('leaves a computed default unsent while its field is empty, and says what computes it', () => {
    const info: INotebookInfo = {
      ...INFO,
      parameters: [
        {
          name: 'rows',
          type: 'int',
          declared_type: 'int',
          default: null,
          has_default: false,
          computed: '10**6'
        }
      ]
    };
    const form = new PromoteForm(info, plain);
    expect(field(form, 'rows').placeholder).toBe('computed: 10**6');
    expect(form.getValue().parameters).toEqual({});
    type(field(form, 'rows'), '12');
    expect(form.getValue().parameters).toEqual({ rows: 12 });
  });

  it('labels each field with its declared type', () => {
    const form = new PromoteForm(INFO, plain);
    const labels = Array.from(form.node.querySelectorAll('.nbm-type')).map(
      node => node.textContent
    );
    expect(labels).toEqual([
      'float',
      'int',
      'bool',
      'list[str]',
      'dict[str, float]',
      'str | None',
      'int | None',
      'any'
    ]);
  });

  it('checks the type as the user types, and clears the error once fixed', () => {
    const form = new PromoteForm(INFO, plain);
    const c = field(form, 'C');
    type(c, 'abc');
    expect(errorOf(form, 'C')).toBe('C must be a number');
    expect(c.classList.contains('nbm-invalid')).toBe(true);
    type(c, '0.5');
    expect(errorOf(form, 'C')).toBe('');
    expect(c.classList.contains('nbm-invalid')).toBe(false);
  });

  it('checks the items of a list and the values of a dict', () => {
    const form = new PromoteForm(INFO, plain);
    type(field(form, 'cols'), '["a", 2]');
    expect(errorOf(form, 'cols')).toBe('cols[1] must be a string');
    type(field(form, 'weights'), '{"a": "heavy"}');
    expect(errorOf(form, 'weights')).toBe('weights["a"] must be a number');
  });

  it('hands back every error, and no value for a field in error', () => {
    const form = new PromoteForm(INFO, plain);
    type(field(form, 'max_iter'), '1.5');
    type(field(form, 'limit'), 'none');
    const model = form.node.querySelector('.nbm-model') as HTMLInputElement;
    type(model, 'bad name');
    const value = form.getValue();
    expect(value.errors).toEqual([
      'max_iter must be an integer',
      'limit must be an integer',
      'the model name may hold letters, digits, "_", ".", "-"'
    ]);
    expect(value.parameters).not.toHaveProperty('max_iter');
    expect(value.parameters.C).toBe(1);
  });

  it('shows what the user entered when the dialog comes back after an error', () => {
    const first = new PromoteForm(INFO, plain);
    type(field(first, 'C'), '0.25');
    type(field(first, 'tag'), 'nightly');
    const model = first.node.querySelector('.nbm-model') as HTMLInputElement;
    type(model, 'other-model');
    const previous = first.getValue();
    const again = new PromoteForm(INFO, plain, previous);
    expect(field(again, 'C').value).toBe('0.25');
    expect(field(again, 'tag').value).toBe('nightly');
    expect(field(again, 'limit').value).toBe('');
    expect(again.getValue()).toEqual(previous);
  });

  it('says so when the notebook declares no parameters or no gates', () => {
    const form = new PromoteForm(
      { ...INFO, parameters: [], gates: [], champion: null },
      plain
    );
    expect(form.node.textContent).toContain(
      'This notebook declares no parameters.'
    );
    expect(form.node.textContent).toContain('No gates configured');
  });

  it('previews the gates next to the champion', () => {
    const form = new PromoteForm(INFO, plain);
    const rows = Array.from(
      form.node.querySelectorAll('.nbm-gate-preview tbody tr')
    ).map(row => Array.from(row.children).map(cell => cell.textContent));
    expect(rows).toEqual([['metric:accuracy', '>= 0.5', '0.9000']]);
    expect(form.node.textContent).toContain(
      'quickstart: champion is version 1'
    );
  });

  it('keeps server text as text', () => {
    const hostile = '<img src=x onerror=alert(1)>';
    const form = new PromoteForm(
      { ...INFO, warnings: [hostile], path: hostile },
      plain
    );
    expect(form.node.querySelector('img')).toBeNull();
    expect(form.node.textContent).toContain(hostile);
  });

  it('translates every word it shows; data stays as sent', () => {
    const marked = markingBundle();
    const form = new PromoteForm(INFO, marked);
    type(field(form, 'C'), 'abc');
    type(form.node.querySelector('.nbm-model') as HTMLInputElement, 'bad name');
    const data = [
      INFO.path,
      INFO.pipeline,
      ...INFO.warnings,
      ...INFO.parameters.flatMap(p => [p.name, p.declared_type ?? p.type]),
      'metric:accuracy',
      '>= 0.5',
      '0.9000'
    ];
    expect(untranslated(form.node, data)).toEqual([]);
    expect(form.getValue().errors).toEqual([
      '«C must be a number»',
      '«the model name may hold letters, digits, "_", ".", "-"»'
    ]);
  });
});
