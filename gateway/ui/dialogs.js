// The two modal dialogs of index.html: the admin-token prompt and the confirmation asked
// before an order changes an endpoint. Both are native <dialog>s (focus trapping, Escape,
// a backdrop for free); their forms are handled here, never submitted (CSP form-action
// 'none' would refuse it anyway).

/**
 * Shows the token dialog and resolves with the token the user entered. It cannot be
 * dismissed: without a token no admin call can succeed.
 */
export function promptToken(refused) {
  const dialog = document.getElementById('auth-dialog');
  const form = document.getElementById('auth-form');
  const input = document.getElementById('auth-token');
  const message = document.getElementById('auth-message');
  message.textContent = refused && refused.code === 'invalid_token'
    ? 'That admin token was refused. Enter the admin token of this Portico.'
    : 'This Portico’s admin API needs its admin token.';
  message.classList.toggle('error-text', Boolean(refused && refused.code === 'invalid_token'));
  input.value = '';
  return new Promise((resolve) => {
    const cancel = (event) => event.preventDefault();
    const submit = (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      form.removeEventListener('submit', submit);
      dialog.removeEventListener('cancel', cancel);
      dialog.close();
      resolve(token);
    };
    form.addEventListener('submit', submit);
    dialog.addEventListener('cancel', cancel);
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
}

/**
 * Asks before an order. Resolves true when confirmed, false when cancelled (button,
 * Escape). `danger` paints the confirm button red.
 */
export function confirmAction({ title, message, confirm = 'Confirm', danger = false }) {
  const dialog = document.getElementById('confirm-dialog');
  const form = document.getElementById('confirm-form');
  const ok = document.getElementById('confirm-ok');
  const cancelButton = document.getElementById('confirm-cancel');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-message').textContent = message;
  ok.textContent = confirm;
  ok.classList.toggle('button-danger', danger);
  ok.classList.toggle('button-primary', !danger);
  return new Promise((resolve) => {
    const done = (answer) => {
      form.removeEventListener('submit', submit);
      cancelButton.removeEventListener('click', cancel);
      dialog.removeEventListener('close', cancel);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const submit = (event) => {
      event.preventDefault();
      done(true);
    };
    const cancel = () => done(false);
    form.addEventListener('submit', submit);
    cancelButton.addEventListener('click', cancel);
    dialog.addEventListener('close', cancel);
    dialog.showModal();
    // The safe choice has the focus: Enter alone does not stop an endpoint.
    cancelButton.focus();
  });
}
