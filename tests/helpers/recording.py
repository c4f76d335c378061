"""A stand-in optimizer that records the accumulated gradient of each step instead of applying it."""


class RecordingOptimizer:
    def __init__(self, params):
        self.params, self.grads = list(params), []

    def step(self):
        # a sharded (FSDP) gradient is gathered whole: every process calls step, so the collective matches
        grads = [p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad for p in self.params]
        self.grads.append([g.detach().clone() for g in grads])

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None
