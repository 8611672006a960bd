;;; emacs_driver.el --- run editors/README.md's eglot snippet against the real server  -*- lexical-binding: t -*-
;;
;; Loaded by tests/editors/test_emacs.py after init.el (one of the README's snippets) in
;; `emacs --batch': opens $DLLM_FILE, does what the README says for $DLLM_CLIENT (eglot: M-x eglot;
;; lsp-mode: M-x lsp), then M-x completion-at-point at $DLLM_LINE/$DLLM_COLUMN, and writes what it
;; saw to $DLLM_RESULT as JSON; the assertions are in the test.  Nothing here configures the client:
;; the server command and its initializationOptions come from the snippet alone.

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

;; ---- the two clients: start, the server's capabilities, the completion item, shut down ----------
(defun dllm-start (client)
  "Start CLIENT as the README says in this buffer; return its server (eglot) or workspace (lsp-mode)."
  (pcase client
    ("eglot"
     (require 'eglot)                       ; as M-x eglot autoloads it: runs the snippet's form
     (cl-defmethod eglot-handle-notification (_server (_method (eql dllm/status)) &rest params)
       (setq dllm-statuses (append dllm-statuses (list params))))
     (call-interactively #'eglot)           ; M-x eglot
     (dllm-wait (lambda () (let ((s (eglot-current-server))) (and s (eglot--capabilities s) s))) 20))
    ("lsp-mode"
     (require 'lsp-mode)                    ; runs the snippet's form: registers the dllm-lsp client
     (puthash "dllm/status" (lambda (_workspace params) (setq dllm-statuses (append dllm-statuses (list params))))
              (lsp--client-notification-handlers (gethash 'dllm-lsp lsp-clients)))
     (lsp-workspace-folders-add default-directory)   ; the answer to lsp-mode's "import project root?"
     (lsp)                                  ; M-x lsp
     (dllm-wait (lambda () (cl-find-if (lambda (w) (and (eq (lsp--workspace-status w) 'initialized)
                                                        (eq (lsp--client-server-id (lsp--workspace-client w)) 'dllm-lsp)))
                                       (lsp-workspaces)))
                20))))

(defun dllm-describe (client server)
  "The contact / settings CLIENT holds for dllm-lsp, and SERVER's capabilities, as a plist."
  (pcase client
    ("eglot" (list :contact (format "%S" (cdr (cl-find-if (lambda (e) (and (listp (car e)) (memq major-mode (car e))))
                                                            eglot-server-programs)))
                   :managed (if (bound-and-true-p eglot--managed-mode) t :json-false)
                   :capf (if (memq #'eglot-completion-at-point completion-at-point-functions) t :json-false)
                   :capabilities (eglot--capabilities server)))
    ("lsp-mode" (list :contact (format "%S" (lsp--client-initialization-options (lsp--workspace-client server)))
                      :managed (if (bound-and-true-p lsp-mode) t :json-false)
                      :capf (if (memq #'lsp-completion-at-point completion-at-point-functions) t :json-false)
                      :capabilities (lsp--workspace-server-capabilities server)))))

(defun dllm-candidates (client)
  "CLIENT's completion-at-point candidates here, and the LSP items behind them."
  (let* ((capf (funcall (if (equal client "eglot") #'eglot-completion-at-point #'lsp-completion-at-point)))
         (candidates (and capf (all-completions "" (nth 2 capf))))
         (property (if (equal client "eglot") 'eglot--lsp-item 'lsp-completion-item)))
    (list :candidates (vconcat (mapcar #'substring-no-properties candidates))
          :items (vconcat (mapcar (lambda (c) (get-text-property 0 property c)) candidates)))))

(defun dllm-log (client server)
  (let ((buffer (pcase client
                  ("eglot" (and server (jsonrpc-events-buffer server)))
                  ("lsp-mode" (get-buffer "*lsp-log*")))))
    (if (buffer-live-p buffer)
        (with-current-buffer buffer
          (let ((text (buffer-substring-no-properties (point-min) (point-max))))
            (substring text (max 0 (- (length text) 6000)))))
      "")))

(defun dllm-stop (client server)
  (ignore-errors
    (pcase client
      ("eglot" (let ((eglot-autoshutdown t)) (eglot-shutdown server nil 5)))
      ("lsp-mode" (lsp-workspace-shutdown server)))))

(defun dllm-state-of (status)
  (if (hash-table-p status) (gethash "state" status) (plist-get status :state)))

;; ---- the scenario ---------------------------------------------------------------------------
(defun dllm-buffer-lines ()
  (vconcat (split-string (buffer-substring-no-properties (point-min) (point-max)) "\n")))

(let ((client (getenv "DLLM_CLIENT")) result server)
  (condition-case err
      (progn
        (find-file (getenv "DLLM_FILE"))
        (setq result (list :mode (symbol-name major-mode)))
        (setq server (dllm-start client))
        (setq result (append result (list :connected (if server t :json-false))))
        (when server
          (setq result (append result (dllm-describe client server)))
          (dllm-wait (lambda () (cl-find-if (lambda (s) (member (dllm-state-of s) '("ready" "error"))) dllm-statuses))
                     60)
          (goto-char (point-min))
          (forward-line (1- (string-to-number (getenv "DLLM_LINE"))))
          (forward-char (string-to-number (getenv "DLLM_COLUMN")))
          (setq result (append result (list :before (dllm-buffer-lines)) (dllm-candidates client)))
          (completion-at-point)               ; M-x completion-at-point
          (setq result (append result (list :after (dllm-buffer-lines)
                                            :point_after (vector (line-number-at-pos)
                                                                 (- (point) (line-beginning-position))))))))
    (error (push (format "%S" err) dllm-errors)))
  (setq result (append result (list :statuses (vconcat dllm-statuses) :events (dllm-log client server))))
  (dllm-write result)
  (when server (dllm-stop client server)))
;;; emacs_driver.el ends here
