/**
 * The Promote dialog's body: a form generated from the notebook's typed parameter schema
 * (defaults filled, types checked as you type), the target model, and a preview of the gates
 * with the current champion's values. The rules per parameter live in `params.ts`.
 */
import type { Dialog } from '@jupyterlab/apputils';
import type { TranslationBundle } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import { asText, h } from './dom';
import { INotebookInfo, IParameter } from './models';
import {
  fieldKind,
  IParsed,
  initialChecked,
  initialText,
  isModelName,
  parseParameter,
  previousText,
  typeLabel
} from './params';

export interface IPromoteValue {
  parameters: { [name: string]: unknown };
  model: string;
  errors: string[];
}

type Reader = () => IParsed & { name: string };

export class PromoteForm
  extends Widget
  implements Dialog.IBodyWidget<IPromoteValue>
{
  private readonly readers: Reader[] = [];
  private readonly modelInput: HTMLInputElement;

  constructor(
    private readonly info: INotebookInfo,
    private readonly trans: TranslationBundle,
    previous?: IPromoteValue
  ) {
    super();
    this.addClass('nbm-form');
    const node = this.node;
    node.appendChild(
      h(
        'p',
        { class: 'nbm-muted' },
        trans.__('Notebook:'),
        ' ',
        h('code', {}, info.path),
        ' · ',
        trans.__('pipeline'),
        ' ',
        h('code', {}, info.pipeline),
        ' · ',
        trans._n('%1 step', '%1 steps', info.steps.length)
      )
    );
    for (const warning of info.warnings || []) {
      node.appendChild(h('p', { class: 'nbm-warning' }, warning));
    }

    const table = h('div', { class: 'nbm-params' });
    if (info.parameters.length === 0) {
      table.appendChild(
        h(
          'p',
          { class: 'nbm-muted' },
          trans.__('This notebook declares no parameters.')
        )
      );
    }
    for (const param of info.parameters) {
      table.appendChild(this.field(param, previous?.parameters[param.name]));
    }
    node.appendChild(h('h3', {}, trans.__('Parameters')));
    node.appendChild(table);

    node.appendChild(h('h3', {}, trans.__('Target model')));
    this.modelInput = h('input', {
      type: 'text',
      class: 'jp-mod-styled nbm-model',
      name: 'model',
      'aria-label': trans.__('model name')
    }) as HTMLInputElement;
    this.modelInput.value = previous?.model ?? info.model;
    const modelError = h('div', { class: 'nbm-error' });
    this.modelInput.addEventListener('input', () => {
      modelError.textContent = isModelName(this.modelInput.value)
        ? ''
        : trans.__('letters, digits, "_", ".", "-"');
    });
    node.appendChild(this.modelInput);
    node.appendChild(modelError);

    node.appendChild(h('h3', {}, trans.__('Gates')));
    node.appendChild(this.gates());
  }

  private field(param: IParameter, previous: unknown): HTMLElement {
    const id = `nbm-param-${param.name}`;
    const error = h('div', {
      class: 'nbm-error',
      'data-param-error': param.name
    });
    let input: HTMLInputElement | HTMLTextAreaElement;
    const kind = fieldKind(param);
    if (kind === 'checkbox') {
      const box = h('input', {
        type: 'checkbox',
        id,
        name: param.name
      }) as HTMLInputElement;
      box.checked = initialChecked(param, previous);
      input = box;
    } else {
      input = h(kind === 'textarea' ? 'textarea' : 'input', {
        ...(kind === 'textarea' ? { rows: '2' } : { type: 'text' }),
        id,
        name: param.name,
        class: 'jp-mod-styled'
      }) as HTMLInputElement | HTMLTextAreaElement;
      input.value =
        previous !== undefined
          ? previousText(param, previous)
          : initialText(param);
    }
    if (param.has_default === false) {
      input.placeholder = param.computed
        ? this.trans.__('computed: %1', param.computed)
        : this.trans.__('unset');
    }
    const read: Reader = () => {
      const raw =
        input instanceof HTMLInputElement && input.type === 'checkbox'
          ? input.checked
          : input.value;
      return { name: param.name, ...parseParameter(param, raw, this.trans) };
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
      h(
        'label',
        { for: id },
        param.name,
        ' ',
        h('span', { class: 'nbm-type' }, typeLabel(param))
      ),
      input,
      param.help ? h('div', { class: 'nbm-muted' }, param.help) : null,
      error
    );
  }

  private gates(): HTMLElement {
    const { info, trans } = this;
    const problems = info.config_errors || [];
    if (problems.length > 0) {
      return h(
        'div',
        { class: 'nbm-config-errors' },
        h(
          'p',
          { class: 'nbm-error' },
          trans.__('Promotion refuses until the configuration is fixed:')
        ),
        ...problems.map(problem => h('p', { class: 'nbm-error' }, problem))
      );
    }
    if (!info.gates || info.gates.length === 0) {
      return h(
        'p',
        { class: 'nbm-muted' },
        trans.__('No gates configured ([tool.nb_mlops.gates]).')
      );
    }
    const champion = info.champion
      ? trans.__(
          '%1: champion is version %2',
          info.model,
          info.champion.version
        )
      : trans.__('%1: no champion yet', info.model);
    const rows = info.gates.map(g =>
      h(
        'tr',
        {},
        h('td', {}, g.gate),
        h('td', {}, asText(g.expected)),
        h('td', {}, asText(g.champion))
      )
    );
    return h(
      'div',
      {},
      h('p', { class: 'nbm-muted' }, champion),
      h(
        'table',
        { class: 'nbm-table nbm-gate-preview' },
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            h('th', {}, trans.__('gate')),
            h('th', {}, trans.__('requires')),
            h('th', {}, trans.__('champion'))
          )
        ),
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
      } else if ('value' in result) {
        parameters[result.name] = result.value; // absent: the notebook computes the default
      }
    }
    const model = this.modelInput.value.trim();
    if (!isModelName(model)) {
      errors.push(
        this.trans.__('the model name may hold letters, digits, "_", ".", "-"')
      );
    }
    return { parameters, model, errors };
  }
}
