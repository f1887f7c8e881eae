/**
 * The errors the REST calls raise, and the one line the user reads for any of them.
 */
import type { TranslationBundle } from '@jupyterlab/translation';

import { ShapeError } from './models';

/** An API error carrying the server's one-line message (status 0: no answer at all). */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The line shown for an error thrown by a REST call or while handling its reply. */
export function describeError(
  error: unknown,
  trans: TranslationBundle
): string {
  if (error instanceof ApiError && error.status === 0) {
    return trans.__('Cannot reach the Jupyter server: %1', error.message);
  }
  if (error instanceof ShapeError) {
    return trans.__(
      'The server sent an unexpected %1 (%2): is the nb_mlops server extension the same version as this page?',
      error.what,
      error.problem
    );
  }
  if (error instanceof Error) {
    return error.message || error.name;
  }
  return String(error);
}
