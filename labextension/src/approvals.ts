/**
 * Promotion requests in the MLOps panel: the requests waiting for an approver, each with
 * Approve and Reject buttons. The server decides who may (the project's `approvers`, the
 * deployment's Authorizer, never one's own request); a refusal is shown as the server's line.
 */
import type { TranslationBundle } from '@jupyterlab/translation';

import { requestAPI } from './api';
import { clear, h } from './dom';
import { describeError } from './errors';
import { ShapeError } from './models';

/** One pending request (GET /nb-mlops/api/approvals). */
export interface IApprovalRequest {
  id: string;
  model: string;
  run_id: string | null;
  requester: string;
  when: string;
  reason: string | null;
  champion: string | null;
  stale: boolean;
}

export type Verdict = 'approve' | 'reject';

/** The calls the view makes (replaced by a fake in tests). */
export interface IApprovalsClient {
  list(model: string): Promise<IApprovalRequest[]>;
  decide(id: string, verdict: Verdict): Promise<unknown>;
}

function text(value: unknown): string | null {
  if (typeof value === 'number') {
    return String(value);
  }
  return typeof value === 'string' ? value : null;
}

/** Check the reply of GET approvals: `{"requests": [{id, model, requester, ...}]}`. */
export function parseApprovals(value: unknown): IApprovalRequest[] {
  const what = 'approval list';
  const list =
    value !== null && typeof value === 'object'
      ? (value as { requests?: unknown }).requests
      : undefined;
  if (!Array.isArray(list)) {
    throw new ShapeError(what, '"requests" is not a list');
  }
  return list.map(item => {
    const data = (item ?? {}) as { [key: string]: unknown };
    const id = text(data.id);
    const model = text(data.model);
    if (!id || !model) {
      throw new ShapeError(what, 'a request has no id or model');
    }
    return {
      id,
      model,
      run_id: text(data.run_id),
      requester: text(data.requester) ?? '',
      when: text(data.when) ?? '',
      reason: text(data.reason),
      champion: text(data.champion),
      stale: data.stale === true
    };
  });
}

const enc = encodeURIComponent;

/** The REST calls of the server extension. */
export const restClient: IApprovalsClient = {
  async list(model: string): Promise<IApprovalRequest[]> {
    const query = model ? `?model=${enc(model)}` : '';
    return parseApprovals(await requestAPI(`approvals${query}`));
  },
  decide(id: string, verdict: Verdict): Promise<unknown> {
    return requestAPI(`approvals/${enc(id)}/${verdict}`, {
      method: 'POST',
      body: '{}'
    });
  }
};

/** The panel's "Approvals" section: pending requests with Approve / Reject. */
export class ApprovalsView {
  readonly node = h('div', { class: 'nbm-approvals' });
  private readonly listNode = h('div', { class: 'nbm-approvals-list' });
  private readonly messageNode = h('div', { class: 'nbm-error' });
  private requests: IApprovalRequest[] = [];
  private model = '';

  /** `onDecided` runs after a request is approved or rejected (e.g. reload the history). */
  constructor(
    private readonly trans: TranslationBundle,
    private readonly onDecided: () => void = () => undefined,
    private readonly client: IApprovalsClient = restClient
  ) {
    this.node.appendChild(h('h3', {}, trans.__('Approvals')));
    this.node.appendChild(this.messageNode);
    this.node.appendChild(this.listNode);
    this.render();
  }

  /** Load the pending requests of `model` ('' for every model). */
  async load(model: string): Promise<void> {
    this.model = model;
    try {
      this.requests = await this.client.list(model);
      this.messageNode.textContent = '';
    } catch (error) {
      this.requests = [];
      this.messageNode.textContent = describeError(error, this.trans);
    }
    this.render();
  }

  /** Approve or reject one request, then reload; the server's refusal is shown as sent. */
  async decide(id: string, verdict: Verdict): Promise<void> {
    let refused = '';
    try {
      await this.client.decide(id, verdict);
      this.onDecided();
    } catch (error) {
      refused = describeError(error, this.trans);
    }
    await this.load(this.model);
    if (refused) {
      this.messageNode.textContent = refused;
    }
  }

  private render(): void {
    clear(this.listNode);
    if (this.requests.length === 0) {
      this.listNode.appendChild(
        h('p', { class: 'nbm-muted' }, this.trans.__('No pending requests.'))
      );
      return;
    }
    for (const request of this.requests) {
      this.listNode.appendChild(this.card(request));
    }
  }

  private button(
    request: IApprovalRequest,
    verdict: Verdict,
    label: string,
    aria: string
  ) {
    const node = h(
      'button',
      {
        class: `jp-Button jp-mod-styled nbm-${verdict}`,
        type: 'button',
        'aria-label': aria
      },
      label
    );
    node.addEventListener('click', () => void this.decide(request.id, verdict));
    return node;
  }

  private card(request: IApprovalRequest): HTMLElement {
    const trans = this.trans;
    return h(
      'div',
      { class: 'nbm-approval', 'data-request': request.id },
      h(
        'div',
        {},
        trans.__(
          '%1: run %2 requested by %3',
          request.model,
          request.run_id ?? '-',
          request.requester
        )
      ),
      request.reason
        ? h(
            'div',
            { class: 'nbm-muted' },
            trans.__('reason: %1', request.reason)
          )
        : null,
      request.stale
        ? h(
            'div',
            { class: 'nbm-error' },
            trans.__('stale: the champion changed since the request')
          )
        : null,
      h(
        'div',
        { class: 'nbm-row' },
        this.button(
          request,
          'approve',
          trans.__('Approve'),
          trans.__('Approve request %1', request.id)
        ),
        this.button(
          request,
          'reject',
          trans.__('Reject'),
          trans.__('Reject request %1', request.id)
        )
      )
    );
  }
}
