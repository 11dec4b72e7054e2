// What pg_stat_archiver tells of a primary's WAL archiving.

import type { ArchiverStatus } from './types.js';

/** The archiver's last attempt failed: postgres retries the same segment until it succeeds. */
export const archivingFails = (a: ArchiverStatus): boolean => (a.lastFailedAt ?? 0) > (a.lastArchivedAt ?? 0);
