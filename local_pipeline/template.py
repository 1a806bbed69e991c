"""The synthesized template, read as deployed: the labeling state machines and their Lambdas, with local names.

``synth_app()`` builds the CDK app exactly as ``cdk synth`` does (``app.build_app`` with cdk.json's
context) and returns the cloud assembly; ``synthesize_template()`` returns its single stack's
template. ``LocalStack`` (not the product: a tiny resolver) gives every resource a local physical
name and renders the intrinsics the state machine definitions and the Lambda environments use
(``Fn::Join``, ``Fn::GetAtt``, ``Ref``, ``Fn::Sub``, ``Fn::Select``, ``Fn::Split``) into the names
and ARNs the local moto account uses. Nothing here knows the logical ids: resources are found by
type and by what the definitions reference; ``LocalStack.state_machine(kind)`` finds a labeling
state machine by the worker its Map runs (``WORKER_STATES``). ``load_handler()`` imports a Lambda
handler file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aws_cdk as cdk
    from aws_cdk import cx_api

#: The repository's root directory: the one definition (tests import it through tests.helpers).
REPO_ROOT = Path(__file__).resolve().parent.parent
LIST_HANDLER = REPO_ROOT / "lambdas" / "list_receipts" / "handler.py"
PROCESS_HANDLER = REPO_ROOT / "lambdas" / "process_receipt" / "handler.py"
VALIDATE_HANDLER = REPO_ROOT / "lambdas" / "validate_labels" / "handler.py"
ACCOUNT_ID = "123456789012"  # moto's default account
REGION = "us-east-1"
PARTITION = "aws"

STATE_MACHINE_TYPE = "AWS::StepFunctions::StateMachine"
LAMBDA_INVOKE_RESOURCE = "arn:aws:states:::lambda:invoke"
#: Kind of labeling state machine -> the Task state its Map runs per receipt (CreateLabels, ValidatePendingLabels).
WORKER_STATES: dict[str, str] = {"create": "ProcessReceipt", "validate": "ValidateReceipt"}


def cdk_json_context() -> dict[str, Any]:
    """cdk.json's context, as the CDK CLI hands it to the app."""
    return dict(json.loads((REPO_ROOT / "cdk.json").read_text())["context"])


def build_cdk_app(outdir: Path | None = None, **context: Any) -> cdk.App:
    """The app as ``cdk synth`` builds it (cdk.json's context plus ``context``), not yet synthesized."""
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    import aws_cdk as cdk

    from app import build_app

    merged = cdk_json_context()
    merged.update(context)
    app = cdk.App(outdir=None if outdir is None else str(outdir), context=merged)
    build_app(app)
    return app


def synth_app(outdir: Path, **context: Any) -> cx_api.CloudAssembly:
    """Build the app as ``cdk synth`` does (cdk.json's context plus ``context``) and synthesize it into ``outdir``."""
    return build_cdk_app(outdir, **context).synth()


def synthesize_template(outdir: Path | None = None, **context: Any) -> dict[str, Any]:
    """Synthesize the app (cdk.json context plus ``context``) and return its single stack's template.

    Without ``outdir`` the cloud assembly goes to a temporary directory, removed afterwards.
    """
    with tempfile.TemporaryDirectory(prefix="local-pipeline-synth-") as tmp:
        stacks = list(synth_app(outdir or Path(tmp), **context).stacks)
        if len(stacks) != 1:
            raise RuntimeError(f"expected one stack in the app, found {[s.stack_name for s in stacks]}")
        return dict(stacks[0].template)


def load_template(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def resources_of_type(template: dict[str, Any], *types: str) -> dict[str, dict[str, Any]]:
    """Logical id -> resource, for every resource of the template whose type is one of ``types``."""
    return {k: v for k, v in template.get("Resources", {}).items() if v["Type"] in types}


def load_handler(path: Path | str, name: str) -> ModuleType:
    """Import the handler file at ``path`` as a new module called ``name`` (its cached clients start empty).

    The handlers are files named ``handler.py`` in folders that are not packages (as in Lambda, where
    the folder is the task root), so each load gets a module name of its own; it is registered in
    ``sys.modules`` under that name (replacing an earlier load).
    """
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class TemplateError(RuntimeError):
    """The template does not hold what the local run needs, or uses an intrinsic it cannot resolve."""


def _bucket_safe(name: str) -> str:
    safe = re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-.")
    return safe[:63].rstrip("-.")


# Property holding an explicit physical name, per resource type.
_NAME_PROPERTY = {
    "AWS::Lambda::Function": "FunctionName",
    "AWS::S3::Bucket": "BucketName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::DynamoDB::GlobalTable": "TableName",
    "AWS::StepFunctions::StateMachine": "StateMachineName",
    "AWS::SecretsManager::Secret": "Name",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::IAM::Role": "RoleName",
    "AWS::ECR::Repository": "RepositoryName",
}


@dataclass
class LocalStack:
    """Local physical names and ARNs of a template's resources, and an intrinsic resolver."""

    template: dict[str, Any]
    stack_name: str = "local"
    account: str = ACCOUNT_ID
    region: str = REGION
    #: Overrides: logical id -> value of ``Ref`` (e.g. the ARN moto gave a secret).
    refs: dict[str, str] = field(default_factory=dict)

    @property
    def resources(self) -> dict[str, Any]:
        return dict(self.template.get("Resources", {}))

    def resource(self, logical_id: str) -> dict[str, Any]:
        try:
            return dict(self.resources[logical_id])
        except KeyError:
            raise TemplateError(f"the template has no resource {logical_id!r}") from None

    def physical_name(self, logical_id: str) -> str:
        resource = self.resource(logical_id)
        prop = _NAME_PROPERTY.get(resource["Type"])
        explicit = resource.get("Properties", {}).get(prop) if prop else None
        if explicit is not None:
            return self.resolve(explicit)
        generated = f"{self.stack_name}-{logical_id}"
        if resource["Type"] == "AWS::S3::Bucket":
            return _bucket_safe(generated)
        return generated

    def arn(self, logical_id: str) -> str:
        type_ = self.resource(logical_id)["Type"]
        name = self.physical_name(logical_id)
        p, r, a = PARTITION, self.region, self.account
        if type_ == "AWS::Lambda::Function":
            return f"arn:{p}:lambda:{r}:{a}:function:{name}"
        if type_ == "AWS::StepFunctions::StateMachine":
            return f"arn:{p}:states:{r}:{a}:stateMachine:{name}"
        if type_ == "AWS::S3::Bucket":
            return f"arn:{p}:s3:::{name}"
        if type_ in ("AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable"):
            return f"arn:{p}:dynamodb:{r}:{a}:table/{name}"
        if type_ == "AWS::SecretsManager::Secret":
            return self.refs.get(logical_id) or f"arn:{p}:secretsmanager:{r}:{a}:secret:{name}"
        if type_ == "AWS::Logs::LogGroup":
            return f"arn:{p}:logs:{r}:{a}:log-group:{name}:*"
        if type_ == "AWS::IAM::Role":
            return f"arn:{p}:iam::{a}:role/{name}"
        return f"arn:{p}:local:{r}:{a}:{logical_id}/{name}"

    def ref(self, logical_id: str) -> str:
        pseudo = {
            "AWS::Partition": PARTITION,
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": self.stack_name,
            "AWS::StackId": f"arn:{PARTITION}:cloudformation:{self.region}:{self.account}:stack/{self.stack_name}/x",
        }
        if logical_id in pseudo:
            return pseudo[logical_id]
        if logical_id in self.refs:
            return self.refs[logical_id]
        type_ = self.resource(logical_id)["Type"]
        if type_ in ("AWS::StepFunctions::StateMachine", "AWS::SecretsManager::Secret"):
            return self.arn(logical_id)  # these types' Ref is their ARN
        return self.physical_name(logical_id)

    def get_att(self, logical_id: str, attribute: str) -> str:
        if attribute == "Arn":
            return self.arn(logical_id)
        if attribute in ("Name", "StateMachineName"):
            return self.physical_name(logical_id)
        raise TemplateError(f"cannot resolve Fn::GetAtt {logical_id}.{attribute} locally")

    def resolve(self, value: Any) -> Any:
        """``value`` with every intrinsic function replaced by its local value (strings stay strings)."""
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(logical_id, attribute)
            if key == "Fn::Join":
                separator, parts = arg
                return str(separator).join(str(self.resolve(p)) for p in self.resolve(parts))
            if key == "Fn::Select":
                index, items = arg
                return self.resolve(items)[int(self.resolve(index))]
            if key == "Fn::Split":
                separator, text = arg
                return str(self.resolve(text)).split(separator)
            if key == "Fn::Sub":
                return self._sub(arg)
            if key.startswith("Fn::") or key == "Condition":
                raise TemplateError(f"cannot resolve {key} locally: {json.dumps(value)[:200]}")
        return {k: self.resolve(v) for k, v in value.items()}

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(self.resolve(variables[name]))
            if "." in name:
                logical_id, attribute = name.split(".", 1)
                return self.get_att(logical_id, attribute)
            return self.ref(name)

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    # What the local run needs --------------------------------------------------------------------
    def resources_of_type(self, *types: str) -> list[str]:
        return sorted(resources_of_type(self.template, *types))

    def state_machine(self, kind: str) -> str:
        """The logical id of the labeling state machine of ``kind`` (``create``, ``validate``).

        It is the one state machine whose Map runs that kind's worker Task state (``WORKER_STATES``).
        """
        if kind not in WORKER_STATES:
            raise TemplateError(f"unknown state machine kind {kind!r}; known: {', '.join(WORKER_STATES)}")
        found = [logical_id for logical_id, found_kind in self._labeling_state_machines() if found_kind == kind]
        if len(found) != 1:
            worker = WORKER_STATES[kind]
            raise TemplateError(f"expected one state machine whose Map runs {worker} ({kind}), found {found}")
        return found[0]

    def state_machines(self) -> dict[str, str]:
        """Kind -> logical id of every labeling state machine in the template (in ``WORKER_STATES`` order)."""
        found = {kind for _, kind in self._labeling_state_machines()}
        return {kind: self.state_machine(kind) for kind in WORKER_STATES if kind in found}

    def _labeling_state_machines(self) -> list[tuple[str, str]]:
        kinds = {worker: kind for kind, worker in WORKER_STATES.items()}
        out: list[tuple[str, str]] = []
        for logical_id in self.resources_of_type(STATE_MACHINE_TYPE):
            workers = map_workers(self.definition(logical_id))
            out.extend((logical_id, kinds[worker]) for worker in sorted(workers) if worker in kinds)
        return out

    def definition(self, state_machine_id: str) -> dict[str, Any]:
        props = self.resource(state_machine_id).get("Properties", {})
        raw = props.get("DefinitionString")
        if raw is None:
            raise TemplateError(f"{state_machine_id} has no DefinitionString")
        return dict(json.loads(self.resolve(raw)))

    def function_id_for_arn(self, function_arn: str) -> str:
        for logical_id in self.resources_of_type("AWS::Lambda::Function"):
            if function_arn in (self.arn(logical_id), self.physical_name(logical_id)):
                return logical_id
        raise TemplateError(f"no Lambda function in the template has the ARN {function_arn}")

    def function_environment(self, function_id: str) -> dict[str, str]:
        props = self.resource(function_id).get("Properties", {})
        variables = props.get("Environment", {}).get("Variables", {})
        return {k: str(self.resolve(v)) for k, v in variables.items()}


def iter_states(definition: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every state of a definition, nested Map/Parallel states included (each with a ``_name`` key added)."""
    for name, state in definition.get("States", {}).items():
        yield {"_name": name, **state}
        for nested in (state.get("ItemProcessor"), state.get("Iterator")):
            if nested:
                yield from iter_states(nested)
        for branch in state.get("Branches", []):
            yield from iter_states(branch)


def map_workers(definition: dict[str, Any]) -> set[str]:
    """The names of the Task states inside the item processors of a definition's Map states."""
    workers: set[str] = set()
    for state in iter_states(definition):
        processor = (state.get("ItemProcessor") or state.get("Iterator")) if state.get("Type") == "Map" else None
        if processor:
            workers.update(s["_name"] for s in iter_states(processor) if s.get("Type") == "Task")
    return workers


def lambda_tasks(definition: dict[str, Any]) -> dict[str, str]:
    """State name -> the function ARN (or name) each ``lambda:invoke`` Task state calls."""
    out: dict[str, str] = {}
    for state in iter_states(definition):
        resource = str(state.get("Resource", ""))
        if state.get("Type") == "Task" and resource.endswith(":states:::lambda:invoke"):
            out[state["_name"]] = str(state.get("Parameters", {}).get("FunctionName", ""))
        elif state.get("Type") == "Task" and ":lambda:" in resource and ":function:" in resource:
            out[state["_name"]] = resource
    return out
