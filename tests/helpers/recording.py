"""A stand-in optimizer that records the accumulated gradient of each step instead of applying it."""


class RecordingOptimizer:
    def __init__(self, params):
        self.params, self.grads = list(params), []

    def step(self):
        self.grads.append([p.grad.detach().clone() for p in self.params])

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None
