"""setuptools glue for what pyproject.toml cannot say: the wheel also puts
fastdllm_ray_lmeval.pth at the top of site-packages, so that `lm_eval --model fastdllm` works
once fastdllm-ray is installed (fastdllm_ray_lmeval_hook.py says why a .pth is needed)."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "fastdllm_ray_lmeval.pth"


class BuildPyWithPth(build_py):
    def run(self) -> None:
        super().run()
        # a wheel's top level is build_lib; an editable wheel takes files beyond the
        # packages' own from the install directory instead
        top = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        self.copy_file(str(Path(__file__).parent / PTH), str(Path(top) / PTH), preserve_mode=False)


setup(cmdclass={"build_py": BuildPyWithPth})
