// "Forget this browser" deletes exactly the user's records (app/keystore.js).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { userRecordKeys } from '../static/collab/app/keystore.js';

test('the records of one user: device keys, case memos, pins; nobody else\'s', () => {
  const me = '00000000-0000-4000-8000-000000000001';
  const other = '00000000-0000-4000-8000-000000000002';
  const keys = [
    'wrapping-key', `device:${me}`, `device:${other}`, `pins:${me}`, `pins:${other}`,
    `case:${me}:c1`, `case:${me}:c2`, `case:${other}:c1`, 'invite:abc', `case:${me}x:c1`,
  ];
  assert.deepEqual(userRecordKeys(keys, me).sort(), [`case:${me}:c1`, `case:${me}:c2`, `device:${me}`, `pins:${me}`]);
});
