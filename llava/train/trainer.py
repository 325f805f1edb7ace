"""transformers' Trainer with the original's sampler, optimizer groups and loss."""

from __future__ import annotations

import torch
from transformers import Trainer
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

from llava.data.sampler import ModalityLengthSampler
from llava.fault_injection import kill_in_step, stall_in_step
from llava.model.tunable import optimizer_groups
from llava.train.checkpointing import load_model_weights
from llava.train.forward import ForwardOptions, forward_batch


class LlavaTrainer(Trainer):
    # How compute_loss builds the loss; set from the recipe with llava.train.forward.forward_options.
    forward_options: ForwardOptions = ForwardOptions()

    def __init__(self, *args, lengths: list[int] | None = None, megabatch: int = 1,
                 vision_tower_lr: float | None = None, **kwargs):
        self.lengths = lengths
        self.megabatch = megabatch
        self.vision_tower_lr = vision_tower_lr
        super().__init__(*args, **kwargs)
        # Per-micro-batch token mean averaged over accumulation, as transformers 4.40 did for the
        # seed; 5.x would otherwise normalise by the tokens of the whole global batch.
        self.model_accepts_loss_kwargs = False

    # Set by llava.train.run: the atomic, marked checkpoint writer (llava.train.checkpointing).
    checkpoints = None
    _staging_dir: str | None = None

    def _get_output_dir(self, trial):
        return self._staging_dir or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        """transformers writes the resumable state into a staging folder that is published atomically."""
        if self.checkpoints is None:
            return super()._save_checkpoint(model, trial)
        with self.checkpoints.staging(self) as folder:
            self._staging_dir = str(folder)
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self._staging_dir = None

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Weights under the model's own names, for the final folder and every resumable checkpoint.

        Under ZeRO-3, transformers' own save writes keys such as `language_model.model.model.*` that
        from_pretrained then drops (the LLM silently stays random), so the shards are gathered here and
        the unwrapped model saves itself. No pickled training_args.bin. Every rank must call this.
        """
        folder = output_dir or self.args.output_dir
        if is_deepspeed_zero3_enabled():
            import deepspeed
            with deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None):
                if self.args.should_save:
                    self.model.save_pretrained(folder, state_dict=_untied_copy(self.model))
        elif self.args.should_save:
            self.model.save_pretrained(folder)
        self.accelerator.wait_for_everyone()

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Resume the weights with the model's key mapping and strict loading (see load_model_weights)."""
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_model_weights(model if model is not None else self.model, resume_from_checkpoint)

    def _get_train_sampler(self, train_dataset=None):
        if self.lengths is None:
            return super()._get_train_sampler(train_dataset)
        return ModalityLengthSampler(self.lengths, self.megabatch, self.args.seed)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            target = model if model is not None else self.model
            groups = optimizer_groups(target, self.args.learning_rate, self.args.weight_decay, self.vision_tower_lr)
            for group in groups:
                group.pop("name")
            optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, target)
            optimizer_kwargs.pop("lr", None)
            self.optimizer = optimizer_cls(groups, lr=self.args.learning_rate, **optimizer_kwargs)
            self._group_settings = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        return self.optimizer

    # Set by llava.train.run when it resumes from a DeepSpeed universal checkpoint (llava.train.universal_resume).
    universal_resume = False
    _group_settings: list[dict] = []

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if self.universal_resume and checkpoint is not None:
            self._repair_universal_load()

    def _repair_universal_load(self) -> None:
        """Two things DeepSpeed's universal ZeRO-3 load leaves wrong (deepspeed/runtime/zero/stage3.py,
        load_hp_checkpoint_state_from_checkpoint_dir_stage3) for an optimizer with several param groups:
        - every group gets the first group's hyperparameters, so the vision tower's group would run at the
          LLM's learning rate: each group gets its own values back, its learning rate from the restored scheduler;
        - every partition's Adam state gets the same `step` tensor, which AdamW then increments once per
          partition per step, so the bias correction runs ahead: each partition gets its own copy.
        """
        scheduler = self.lr_scheduler
        for group, settings, lr, base in zip(self.optimizer.param_groups, self._group_settings,
                                             scheduler.get_last_lr(), scheduler.base_lrs):
            group.update(settings)
            group.update(lr=lr, initial_lr=base)
        inner = self.optimizer  # accelerate's wrapper -> DeepSpeed's ZeRO-3 optimizer -> the torch optimizer
        while hasattr(inner, "optimizer"):
            inner = inner.optimizer
        for state in inner.state.values():
            if isinstance(state.get("step"), torch.Tensor):
                state["step"] = state["step"].clone()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        stall_in_step(self.state.global_step + 1)
        loss, outputs = forward_batch(model, inputs, self.forward_options)
        kill_in_step(self.state.global_step + 1)
        return (loss, outputs) if return_outputs else loss


def _untied_copy(model: torch.nn.Module) -> dict:
    """A CPU copy of the state dict with each shared tensor once (the tied lm_head is not written)."""
    seen, state = set(), {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            state[name] = tensor.detach().cpu().clone()
    return state
