;;; emacs_driver.el --- run editors/README.md's eglot snippet against the real server  -*- lexical-binding: t -*-
;;
;; Loaded by tests/editors/test_emacs.py after init.el (the README's snippet) in `emacs --batch':
;; opens $DLLM_FILE, does what the README says (M-x eglot, then M-x completion-at-point at
;; $DLLM_LINE/$DLLM_COLUMN) and writes what it saw to $DLLM_RESULT as JSON; the assertions are in
;; the test.  Nothing here configures eglot: the server command and its initializationOptions come
;; from the snippet alone.

(require 'cl-lib)
(require 'json)

(defvar dllm-statuses nil "The dllm/status notifications, oldest first.")
(defvar dllm-errors nil "Errors met along the way, as strings.")

(defun dllm-wait (pred seconds)
  "Let process output in until PRED returns non-nil or SECONDS pass; PRED's value."
  (let ((deadline (+ (float-time) seconds)) value)
    (while (and (not (setq value (funcall pred))) (< (float-time) deadline))
      (accept-process-output nil 0.05))
    value))

(defun dllm-json (value)
  "VALUE (eglot's plists, with vectors and :json-false) as a JSON string."
  (let ((json-object-type 'plist) (json-encoding-pretty-print nil))
    (json-encode value)))

(defun dllm-write (result)
  (with-temp-file (getenv "DLLM_RESULT")
    (insert (dllm-json (append result (list :errors (vconcat (reverse dllm-errors))))))))

(defun dllm-buffer-lines ()
  (vconcat (split-string (buffer-substring-no-properties (point-min) (point-max)) "\n")))

(let (result server)
  (condition-case err
      (progn
        (find-file (getenv "DLLM_FILE"))
        (push :mode result) (push (symbol-name major-mode) result)
        (require 'eglot)                      ; as M-x eglot autoloads it: runs the snippet's form
        (cl-defmethod eglot-handle-notification (_server (_method (eql dllm/status)) &rest params)
          (setq dllm-statuses (append dllm-statuses (list params))))
        (push :contact result)
        (push (let ((entry (cl-find-if (lambda (e) (and (listp (car e)) (memq major-mode (car e))))
                                       eglot-server-programs)))
                (format "%S" (cdr entry)))
              result)
        (call-interactively #'eglot)          ; M-x eglot
        (setq server (dllm-wait (lambda () (let ((s (eglot-current-server)))
                                             (and s (eglot--capabilities s) s)))
                                20))
        (push :connected result) (push (if server t :json-false) result)
        (when server
          (push :managed result) (push (if (bound-and-true-p eglot--managed-mode) t :json-false) result)
          (push :capabilities result) (push (eglot--capabilities server) result)
          (dllm-wait (lambda () (cl-find-if (lambda (s) (member (plist-get s :state) '("ready" "error")))
                                            dllm-statuses))
                     60)
          (goto-char (point-min))
          (forward-line (1- (string-to-number (getenv "DLLM_LINE"))))
          (forward-char (string-to-number (getenv "DLLM_COLUMN")))
          (push :before result) (push (dllm-buffer-lines) result)
          (push :capf result)
          (push (if (memq #'eglot-completion-at-point completion-at-point-functions) t :json-false) result)
          (let* ((capf (eglot-completion-at-point))
                 (candidates (and capf (all-completions "" (nth 2 capf)))))
            (push :candidates result) (push (vconcat (mapcar #'substring-no-properties candidates)) result)
            (push :items result)
            (push (vconcat (mapcar (lambda (c) (get-text-property 0 'eglot--lsp-item c)) candidates)) result))
          (completion-at-point)               ; M-x completion-at-point
          (push :after result) (push (dllm-buffer-lines) result)
          (push :point_after result)
          (push (vector (line-number-at-pos) (- (point) (line-beginning-position))) result)))
    (error (push (format "%S" err) dllm-errors)))
  (push :statuses result) (push (vconcat dllm-statuses) result)
  (let ((events (and server (jsonrpc-events-buffer server))))
    (push :events result)
    (push (if (buffer-live-p events)
              (with-current-buffer events
                (let ((text (buffer-substring-no-properties (point-min) (point-max))))
                  (substring text (max 0 (- (length text) 6000)))))
            "")
          result))
  (dllm-write (nreverse result))
  (when server
    (ignore-errors (let ((eglot-autoshutdown t)) (eglot-shutdown server nil 5)))))
;;; emacs_driver.el ends here
