/**
 * The Approvals section without a server: pending requests listed with Approve / Reject, every
 * word translated, a decision sent for the right request, a refusal shown as the server's line.
 */
import { ApiError } from '../errors';
import {
  ApprovalsView,
  IApprovalRequest,
  IApprovalsClient,
  parseApprovals,
  Verdict
} from '../approvals';
import { markingBundle, plain, untranslated } from './translation';

const REQUEST: IApprovalRequest = {
  id: '3f2a9c01aa',
  model: 'churn',
  run_id: 'r1',
  requester: 'alice',
  when: '2026-01-01T00:00:00.000Z',
  reason: 'weekly',
  champion: '1',
  stale: true
};

class FakeClient implements IApprovalsClient {
  pending: IApprovalRequest[] = [REQUEST];
  decided: [string, Verdict][] = [];
  refuse: ApiError | null = null;
  list(): Promise<IApprovalRequest[]> {
    return Promise.resolve(this.pending);
  }
  decide(id: string, verdict: Verdict): Promise<unknown> {
    if (this.refuse) {
      return Promise.reject(this.refuse);
    }
    this.decided.push([id, verdict]);
    this.pending = [];
    return Promise.resolve({});
  }
}

describe('ApprovalsView', () => {
  it('lists pending requests with Approve and Reject, every word translated', async () => {
    const view = new ApprovalsView(
      markingBundle(),
      undefined,
      new FakeClient()
    );
    await view.load('churn');
    const card = view.node.querySelector('.nbm-approval') as HTMLElement;
    expect(card.dataset.request).toBe('3f2a9c01aa');
    expect(card.querySelector('.nbm-approve')).not.toBeNull();
    expect(card.querySelector('.nbm-reject')).not.toBeNull();
    expect(card.textContent).toContain('stale');
    expect(
      untranslated(view.node, ['churn', 'r1', 'alice', 'weekly', '3f2a9c01aa'])
    ).toEqual([]);
  });

  it('approves the clicked request, reloads and tells the panel', async () => {
    const client = new FakeClient();
    const decided = jest.fn();
    const view = new ApprovalsView(plain, decided, client);
    await view.load('churn');
    await view.decide('3f2a9c01aa', 'approve');
    expect(client.decided).toEqual([['3f2a9c01aa', 'approve']]);
    expect(decided).toHaveBeenCalledTimes(1);
    expect(view.node.querySelector('.nbm-approval')).toBeNull();
    expect(view.node.textContent).toContain('No pending requests.');
  });

  it('shows the server refusal (403, 409) as one line and keeps the request', async () => {
    const client = new FakeClient();
    client.refuse = new ApiError('forbidden: not authorised for nb_mlops', 403);
    const view = new ApprovalsView(plain, undefined, client);
    await view.load('');
    await view.decide('3f2a9c01aa', 'reject');
    expect(view.node.querySelector('.nbm-error')?.textContent).toBe(
      'forbidden: not authorised for nb_mlops'
    );
    expect(view.node.querySelector('.nbm-approval')).not.toBeNull();
  });

  it('checks the shape of the server reply', () => {
    expect(parseApprovals({ requests: [{ id: 'a', model: 'm' }] })[0]).toEqual({
      id: 'a',
      model: 'm',
      run_id: null,
      requester: '',
      when: '',
      reason: null,
      champion: null,
      stale: false
    });
    expect(() => parseApprovals({})).toThrow('"requests" is not a list');
    expect(() => parseApprovals({ requests: [{ model: 'm' }] })).toThrow(
      'no id or model'
    );
  });
});
